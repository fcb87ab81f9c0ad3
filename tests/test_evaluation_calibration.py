"""``evaluate(..., calibrator=...)``: fitted on validation episodes only, raw results unchanged,
calibrated metrics equal to the hand-assembled route, saved side by side; the CLI's
``--calibrate`` and the report's calibrated figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from bayesmeta import evaluate
from bayesmeta.calibration import (
    SplitConformal,
    TemperatureScaling,
    VarianceScaling,
    conformal_metrics,
)
from bayesmeta.cli import main
from bayesmeta.exceptions import InvalidValueError
from bayesmeta.inference import MAML, ProtoNet
from bayesmeta.metrics import task_metrics
from bayesmeta.models import MLP
from bayesmeta.predictive import CategoricalPredictive
from bayesmeta.tasks import Sinusoid, TaskBatch, fixed_episodes


def _class_episodes(seed: int, n: int, q: int = 6, n_way: int = 3) -> list[TaskBatch]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        means = 1.5 * torch.randn(2, n_way, 4, generator=g)
        sy = torch.arange(n_way).repeat(2, 2)
        qy = torch.randint(0, n_way, (2, q), generator=g)
        sx = means.gather(1, sy.unsqueeze(-1).expand(-1, -1, 4)) + torch.randn(2, sy.shape[1], 4, generator=g)
        qx = means.gather(1, qy.unsqueeze(-1).expand(-1, -1, 4)) + torch.randn(2, q, 4, generator=g)
        out.append(TaskBatch(sx, sy, qx, qy, n_way=n_way))
    return out


@pytest.fixture(scope="module")
def protonet() -> ProtoNet:
    torch.manual_seed(0)
    return ProtoNet(MLP(4, None, hidden=(16,)))


def test_temperature_calibration_matches_the_hand_assembled_route(protonet: ProtoNet) -> None:
    val, test = _class_episodes(0, 12), _class_episodes(1, 5)
    raw = evaluate(protonet, test, progress=False)
    res = evaluate(protonet, test, progress=False, calibrator="temperature", calibration_episodes=val)
    for k, v in raw.per_task.items():  # raw side unchanged by calibrating
        torch.testing.assert_close(res.per_task[k], v, rtol=0, atol=0)
    # by hand: fit on the pooled validation predictives, apply to each test episode
    with torch.no_grad():
        vp = [protonet(b) for b in val]
        pooled = CategoricalPredictive(logits=torch.cat([p.sample_log_probs for p in vp], 1))
        ts = TemperatureScaling.fit(pooled, torch.cat([b.query_y for b in val]))
        want = [task_metrics(ts(protonet(b)), b.query_y) for b in test]
    assert res.calibrated is not None
    assert res.calibrated.calibrator == {"name": "temperature_scaling", "temperature": ts.temperature}
    assert res.calibrated.n_calibration_tasks == 24
    for k in ("ece", "nll", "accuracy"):
        torch.testing.assert_close(res.calibrated.per_task[k], torch.cat([w[k] for w in want]).double())
    torch.testing.assert_close(res.calibrated.per_task["accuracy"], raw.per_task["accuracy"])  # argmax kept
    assert "ece" in res.calibrated.summary and res.calibrated.summary["ece"].n == 10
    assert "+ temperature_scaling" in res.table()


def test_conformal_calibration_reports_coverage_set_size_and_empty_sets(protonet: ProtoNet, tmp_path: Path) -> None:
    val, test = _class_episodes(2, 30), _class_episodes(3, 5)
    # a ragged validation episode (fewer query points) is padded and masked when pooled
    short = _class_episodes(4, 1, q=3)
    cp = SplitConformal(alpha=0.2, score="aps")
    res = evaluate(protonet, test, progress=False, calibrator=cp, calibration_episodes=val + short)
    assert cp.n_calibration_ == 30 * 2 * 6 + 2 * 3
    with torch.no_grad():
        want = [conformal_metrics(cp.predict(protonet(b)), b.query_y) for b in test]
    assert res.calibrated is not None
    for k in ("conformal_coverage", "conformal_set_size", "conformal_empty_rate"):
        torch.testing.assert_close(res.calibrated.per_task[k], torch.cat([w[k] for w in want]))
        assert res.calibrated.summary[k].low <= res.calibrated.summary[k].mean <= res.calibrated.summary[k].high
    d = res.save(tmp_path / "eval")
    summary = json.loads((d / "summary.json").read_text())
    assert summary["calibrated"]["calibrator"]["name"] == "split_conformal"
    assert summary["calibrated"]["calibrator"]["alpha"] == 0.2
    assert set(summary["calibrated"]["metrics"]) == {"conformal_coverage", "conformal_set_size", "conformal_empty_rate"}
    rows = [json.loads(x) for x in (d / "calibrated_per_task.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and rows[0]["conformal_set_size"] == pytest.approx(float(want[0]["conformal_set_size"][0]))
    assert "ece" in summary["metrics"]  # raw metrics still there, side by side


def test_calibrator_is_never_fitted_on_the_test_episodes(protonet: ProtoNet) -> None:
    test = _class_episodes(5, 3)
    with pytest.raises(InvalidValueError, match="calibration_episodes: a calibrator needs validation episodes"):
        evaluate(protonet, test, progress=False, calibrator="temperature")
    with pytest.raises(InvalidValueError, match="disjoint from the test episodes"):
        evaluate(protonet, test, progress=False, calibrator="temperature", calibration_episodes=test)
    with pytest.raises(InvalidValueError, match="disjoint from the test episodes"):
        evaluate(protonet, test, progress=False, calibrator="conformal", calibration_episodes=[*_class_episodes(6, 2), test[0]])
    with pytest.raises(InvalidValueError, match="calibrator: expected one of temperature, conformal"):
        evaluate(protonet, test, progress=False, calibrator="platt", calibration_episodes=_class_episodes(6, 2))


def test_regression_temperature_is_variance_scaling_and_conformal_gives_intervals() -> None:
    torch.manual_seed(0)
    maml = MAML(MLP(1, 1, hidden=(8,)), task_kind="regression")
    src = Sinusoid(k_shot=5, n_query=10)
    val, test = fixed_episodes(src, 40, seed=1, tasks_per_batch=8), fixed_episodes(src, 10, seed=2, tasks_per_batch=5)
    res = evaluate(maml, test, progress=False, calibrator="temperature", calibration_episodes=val)
    assert res.calibrated is not None and res.calibrated.calibrator["name"] == "variance_scaling"
    assert res.calibrated.summary["nll"].mean < res.summary["nll"].mean  # an untrained model's sigma is off
    res = evaluate(maml, test, progress=False, calibrator=SplitConformal(0.1, "cqr"), calibration_episodes=val)
    assert res.calibrated is not None
    assert set(res.calibrated.per_task) == {"conformal_coverage", "conformal_width"}
    assert isinstance(VarianceScaling(), VarianceScaling)


def test_cli_evaluate_calibrate_and_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = {
        "method": {"name": "maml", "inner_lr": 0.01},
        "model": {"name": "mlp", "hidden": [8]},
        "tasks": {"name": "sinusoid", "k_shot": 5, "n_query": 5},
        "training": {"steps": 3, "meta_batch_size": 2, "val_episodes": 4, "val_every": 3, "checkpoint_every": 3},
        "evaluation": {"n_episodes": 6, "tasks_per_batch": 3},
    }
    path, run = tmp_path / "cfg.yaml", tmp_path / "run"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path), "--run-dir", str(run), "--no-progress"]) == 0
    assert main(["evaluate", str(run), "--no-progress", "--calibrate", "conformal", "--alpha", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "conformal_coverage" in out and "fitted on 4 validation tasks" in out
    summary = json.loads((run / "eval" / "summary.json").read_text())
    assert summary["calibrated"]["n_calibration_tasks"] == 4
    assert summary["calibrated"]["calibrator"]["n_calibration"] == 20
    # too few validation points for alpha = 0.01: a one-line error that says how many are needed
    assert main(["evaluate", str(run), "--no-progress", "--calibrate", "conformal", "--alpha", "0.01"]) == 2
    assert "at least 99 points" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--no-progress", "--calibrate", "temperature"]) == 0
    summary = json.loads((run / "eval" / "summary.json").read_text())
    assert summary["calibrated"]["calibrator"]["name"] == "variance_scaling"
    assert main(["report", str(run), "--out", str(tmp_path / "rep")]) == 0
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "PIT histograms: raw vs calibrated" in html
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rep["calibration"][0]["calibrator"]["name"] == "variance_scaling"


def test_report_shows_raw_vs_calibrated_reliability_and_conformal_per_method(protonet: ProtoNet, tmp_path: Path) -> None:
    from bayesmeta.report import build_report, load_run

    val, test = _class_episodes(7, 10), _class_episodes(8, 4)
    runs = []
    for name, cal in (("protonet", "temperature"), ("protonet-conformal", SplitConformal(0.2, "raps"))):
        run = tmp_path / name
        run.mkdir()
        (run / "config.yaml").write_text(f"method:\n  name: {name}\n")
        evaluate(protonet, test, method=name, progress=False, calibrator=cal, calibration_episodes=val).save(run / "eval")
        runs.append(run)
    loaded = load_run(runs[0])
    assert loaded.calibrated_predictive is not None  # rebuilt from the saved temperature
    torch.testing.assert_close(loaded.calibrated_predictive.predicted, loaded.predictive.predicted)
    html = build_report(runs, tmp_path / "rep").read_text()
    assert "Reliability diagrams: raw vs calibrated" in html
    assert "Conformal prediction: coverage and size" in html
    assert "Conformal prediction: per-task distributions" in html
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert [c["calibrator"]["name"] for c in rep["calibration"]] == ["temperature_scaling", "split_conformal"]
    assert rep["calibration"][1]["metrics"]["conformal_set_size"]["mean"] >= 0
