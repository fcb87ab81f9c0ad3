"""evaluate -> EvaluationResult -> files -> load_predictions / ``bayesmeta report``, end to end.

Everything here starts from real ``evaluate`` output (not a hand-written copy of the eval format)
and checks it against an independent route: the learner called episode by episode under the same
seed, metrics computed by hand with ``torch.distributions`` or numpy.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from bayesmeta.cli import main
from bayesmeta.evaluation import evaluate, format_table, load_predictions
from bayesmeta.exceptions import CheckpointError, InvalidValueError
from bayesmeta.inference import ProtoNet
from bayesmeta.inference.latent_np import NP
from bayesmeta.models import Conv4
from bayesmeta.predictive import CategoricalPredictive, GaussianPredictive
from bayesmeta.tasks import Sinusoid, TaskBatch, fixed_episodes


def _np_learner() -> NP:
    torch.manual_seed(0)
    return NP(hidden=8, r_dim=8, z_dim=4, n_samples=3)  # samples z from the global RNG in predict


def _reg_episodes() -> list[TaskBatch]:
    # 5 tasks in batches of 2, 2, 1: the concatenation over episodes is exercised
    return fixed_episodes(Sinusoid(k_shot=4, n_query=6), 5, seed=3, tasks_per_batch=2)


def _cls_episodes() -> list[TaskBatch]:
    g = torch.Generator().manual_seed(0)
    out = []
    for t in (2, 1):
        sy = torch.arange(3).repeat(t, 2)
        qy = torch.randint(0, 3, (t, 5), generator=g)
        out.append(TaskBatch(torch.rand(t, 6, 1, 28, 28, generator=g), sy, torch.rand(t, 5, 1, 28, 28, generator=g), qy, n_way=3))
    return out


def _per_episode_reference(learner, episodes: list[TaskBatch], seed: int) -> list:
    """The second route: the learner called on each whole episode, the global RNG seeded with
    ``seed`` before each call (sampling learners draw per-task noise from one base draw of it,
    so a task's numbers do not depend on the call it is in)."""
    learner.eval()
    out = []
    with torch.no_grad():
        for b in episodes:
            torch.manual_seed(seed)
            out.append(learner(b))
    return out


# ------------------------------------------------------------------------ predictions and RNG
def test_predictions_are_stacked_over_tasks_with_the_sample_dim_first() -> None:
    learner, episodes = _np_learner(), _reg_episodes()
    res = evaluate(learner, episodes, progress=False, seed=5)
    ref = _per_episode_reference(learner, episodes, seed=5)
    p = res.predictions
    assert p["sample_mean"].shape == (3, 5, 6, 1)  # [M, T over all episodes, Q, Dy]
    assert p["sample_variance"].shape == (3, 5, 6, 1) and p["targets"].shape == (5, 6, 1)
    start = 0
    for batch, pred in zip(episodes, ref):
        t = batch.n_tasks
        assert torch.equal(p["sample_mean"][:, start : start + t], pred.sample_mean.float())
        assert torch.equal(p["sample_variance"][:, start : start + t], pred.sample_variance.float())
        assert torch.equal(p["targets"][start : start + t], batch.query_y)
        start += t
    assert res.n_tasks == 5 and res.task_kind == "regression" and res.method == "NP"


def test_per_task_metrics_match_a_hand_computation() -> None:
    learner, episodes = _np_learner(), _reg_episodes()
    res = evaluate(learner, episodes, progress=False, seed=5)
    ref = _per_episode_reference(learner, episodes, seed=5)
    mse, nll = [], []
    for batch, pred in zip(episodes, ref):
        mu, var, y = pred.sample_mean.double(), pred.sample_variance.double(), batch.query_y.double()
        mse.append(((mu.mean(0) - y) ** 2).mean(dim=(1, 2)))  # mixture mean, per task
        comp = torch.distributions.Normal(mu, var.sqrt()).log_prob(y).sum(-1)  # [M, T, Q]
        nll.append(-(torch.logsumexp(comp, 0) - math.log(mu.shape[0])).mean(-1))
    # the model runs in float32 and evaluate reduces in float32: a few float32 eps (1.2e-7) of
    # relative error over 6 queries x 3 samples, far below any real difference
    torch.testing.assert_close(res.per_task["mse"], torch.cat(mse), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(res.per_task["nll"], torch.cat(nll), rtol=1e-5, atol=1e-6)
    for name, ci in res.summary.items():
        assert ci.mean == pytest.approx(float(res.per_task[name].mean()), rel=1e-12, abs=1e-12), name
        assert ci.n == 5


def test_classification_accuracy_and_nll_match_numpy() -> None:
    torch.manual_seed(0)
    learner, episodes = ProtoNet(Conv4(hidden=8)), _cls_episodes()
    res = evaluate(learner, episodes, method="proto", progress=False)
    logp = res.predictions["sample_log_probs"].double().numpy()  # [1, 3, 5, 3]
    y = res.predictions["targets"].numpy()
    assert logp.shape == (1, 3, 5, 3) and res.task_kind == "classification" and res.method == "proto"
    acc = (logp[0].argmax(-1) == y).mean(-1)
    nll = -np.take_along_axis(logp[0], y[..., None], -1)[..., 0].mean(-1)
    # the model runs in float32: per-task means carry float32 rounding (eps = 1.2e-7)
    np.testing.assert_allclose(res.per_task["accuracy"].numpy(), acc, rtol=0, atol=1.2e-7)
    np.testing.assert_allclose(res.per_task["nll"].numpy(), nll, rtol=1e-6)


def test_evaluate_restores_the_global_rng_and_is_deterministic_under_its_seed() -> None:
    learner, episodes = _np_learner(), _reg_episodes()
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    a = evaluate(learner, episodes, progress=False, seed=5)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's stream is left where it was
    torch.manual_seed(99)  # whatever the global state before, the same seed gives the same result
    b = evaluate(learner, episodes, progress=False, seed=5)
    c = evaluate(learner, episodes, progress=False, seed=6)
    for k in a.predictions:
        assert torch.equal(a.predictions[k], b.predictions[k]), k
    assert a.summary == b.summary
    assert not torch.equal(a.predictions["sample_mean"], c.predictions["sample_mean"])  # NP samples z


def test_evaluate_leaves_the_training_mode_alone_and_refuses_no_episodes() -> None:
    learner = _np_learner()
    learner.train()
    evaluate(learner, _reg_episodes()[:1], progress=False)
    assert learner.training
    learner.eval()
    evaluate(learner, _reg_episodes()[:1], progress=False)
    assert not learner.training
    with pytest.raises(InvalidValueError, match="episodes"):
        evaluate(learner, [], progress=False)


# ----------------------------------------------------------------------------- files on disk
def test_save_and_load_predictions_round_trip(tmp_path: Path) -> None:
    learner, episodes = _np_learner(), _reg_episodes()
    res = evaluate(learner, episodes, progress=False, seed=5)
    d = res.save(tmp_path / "eval")
    assert {p.name for p in d.iterdir()} == {"summary.json", "per_task.jsonl", "predictions.pt"}
    summary = json.loads((d / "summary.json").read_text())
    assert summary["method"] == "NP" and summary["task_kind"] == "regression" and summary["n_tasks"] == 5
    assert summary["metrics"] == {k: v.to_dict() for k, v in res.summary.items()}
    rows = [json.loads(ln) for ln in (d / "per_task.jsonl").read_text().splitlines()]
    assert len(rows) == 5
    for name, values in res.per_task.items():
        assert [r[name] for r in rows] == values.tolist(), name
    pred, targets, mask = load_predictions(d)
    assert isinstance(pred, GaussianPredictive) and mask is None
    assert torch.equal(pred.sample_mean, res.predictions["sample_mean"])
    assert torch.equal(pred.sample_variance, res.predictions["sample_variance"])
    assert torch.equal(targets, torch.cat([b.query_y for b in episodes]))
    # the loaded predictive gives the same per-task numbers as the in-memory one
    from bayesmeta.metrics import task_metrics

    for k, v in task_metrics(pred, targets).items():
        torch.testing.assert_close(v, res.per_task[k], rtol=1e-6, atol=1e-6, msg=k)


def test_classification_round_trip_keeps_the_query_mask(tmp_path: Path) -> None:
    torch.manual_seed(0)
    learner = ProtoNet(Conv4(hidden=8))
    b = _cls_episodes()[0]
    qmask = torch.ones(b.query_y.shape, dtype=torch.bool)
    qmask[0, 3:] = False
    masked = TaskBatch(b.support_x, b.support_y, b.query_x, b.query_y, query_mask=qmask, n_way=3)
    res = evaluate(learner, [masked], progress=False)
    pred, targets, mask = load_predictions(res.save(tmp_path))
    assert isinstance(pred, CategoricalPredictive)
    # the file holds log-probabilities; the loaded predictive renormalizes them (log_softmax), which
    # moves float32 values by a few ulp
    torch.testing.assert_close(pred.sample_log_probs, res.predictions["sample_log_probs"], rtol=0, atol=1e-6)
    assert torch.equal(mask, qmask) and torch.equal(targets, b.query_y)
    # the masked task's accuracy counts its 3 present queries only
    hits = (pred.sample_log_probs[0, 0].argmax(-1) == targets[0])[:3].double().mean()
    assert float(res.per_task["accuracy"][0]) == pytest.approx(float(hits), abs=1.2e-7)  # float32 eps


def test_load_predictions_refuses_missing_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_predictions(tmp_path)
    torch.save({"targets": torch.zeros(2)}, tmp_path / "predictions.pt")
    with pytest.raises(CheckpointError, match="neither classification nor regression"):
        load_predictions(tmp_path)


def test_keep_predictions_false_writes_no_predictions_file(tmp_path: Path) -> None:
    res = evaluate(_np_learner(), _reg_episodes()[:1], progress=False, keep_predictions=False)
    assert res.predictions == {}
    assert not (res.save(tmp_path) / "predictions.pt").exists()


def test_save_leaves_no_file_of_an_earlier_evaluation(tmp_path: Path) -> None:
    """Re-evaluating into the same folder without a calibrator (or without predictions) removes
    the calibrated per-task file (the predictions) an earlier evaluation wrote there: a stale
    ``calibrated_per_task.jsonl`` beside a new ``summary.json`` once paired the wrong checkpoint's
    calibrated metrics with a run's raw ones."""
    from bayesmeta.models import MLP

    torch.manual_seed(0)
    learner = ProtoNet(MLP(4, 1, hidden=(8,)))
    g = torch.Generator().manual_seed(0)

    def episodes(n: int) -> list[TaskBatch]:
        return [
            TaskBatch(torch.randn(1, 6, 4, generator=g), torch.arange(3).repeat(2)[None], torch.randn(1, 9, 4, generator=g),
                      torch.randint(0, 3, (1, 9), generator=g), n_way=3)
            for _ in range(n)
        ]  # fmt: skip

    test, val = episodes(3), episodes(2)
    first = evaluate(learner, test, progress=False, calibrator="temperature", calibration_episodes=val)
    d = first.save(tmp_path)
    assert (d / "calibrated_per_task.jsonl").is_file() and (d / "predictions.pt").is_file()
    evaluate(learner, test, progress=False, keep_predictions=False).save(tmp_path)
    assert not (d / "calibrated_per_task.jsonl").exists() and not (d / "predictions.pt").exists()
    summary = json.loads((d / "summary.json").read_text())
    assert "calibrated" not in summary and len((d / "per_task.jsonl").read_text().splitlines()) == 3
    assert not list(d.glob(".*.tmp"))  # the atomic writes left no temporary file


# ------------------------------------------------------------------------------------ tables
def test_table_and_format_table_show_mean_and_half_width() -> None:
    reg = evaluate(_np_learner(), _reg_episodes(), method="np", progress=False, seed=5)
    torch.manual_seed(0)
    cls = evaluate(ProtoNet(Conv4(hidden=8)), _cls_episodes(), method="proto", progress=False)
    lines = reg.table().splitlines()
    assert lines[0].split() == ["method", "tasks", "mse", "nll", "pit_error", "coverage_90", "crps"]
    row = lines[2]
    assert row.split()[:2] == ["np", "5"]
    for name in ("mse", "nll", "crps"):
        ci = reg.summary[name]
        assert f"{ci.mean:.3f} ± {ci.half_width:.3f}" in row, name
    assert lines[-1].startswith("(mean ± half-width of the 95% bootstrap CI")
    both = format_table([reg, cls]).splitlines()
    assert both[0].split()[:5] == ["method", "tasks", "accuracy", "(%)", "mse"]
    acc = cls.summary["accuracy"]
    assert f"{100 * acc.mean:.2f} ± {100 * acc.half_width:.2f}" in both[3]  # accuracy in percent
    assert both[2].split()[2] == "—" and both[3].split()[4] != "—"  # absent metrics get a dash
    only = format_table([reg], metrics=("crps",)).splitlines()
    assert only[0].split() == ["method", "tasks", "crps"]


# ---------------------------------------------------------- evaluate -> files -> bayesmeta report
def test_report_is_built_from_real_evaluate_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = []
    for name, res in (
        ("np", evaluate(_np_learner(), _reg_episodes(), method="np", progress=False, seed=5)),
        ("np_other_seed", evaluate(_np_learner(), _reg_episodes(), method="np_other_seed", progress=False, seed=6)),
    ):
        run = tmp_path / name
        run.mkdir()
        (run / "config.yaml").write_text(f"method:\n  name: {name}\n")
        res.save(run / "eval")
        runs.append((run, res))
    out = tmp_path / "report"
    assert main(["report", str(runs[0][0]), str(runs[1][0]), "--out", str(out)]) == 0
    assert str(out / "report.html") in capsys.readouterr().out
    payload = json.loads((out / "report.json").read_text())
    # both runs were evaluated on the same episodes (same fingerprint): one group, one table
    assert len(payload["groups"]) == 1
    table = payload["groups"][0]["table"]
    assert [r["method"] for r in table["rows"]] == ["np", "np_other_seed"]
    for row, (_, res) in zip(table["rows"], runs):
        for name, ci in res.summary.items():
            got = row["metrics"][name]
            assert got["mean"] == pytest.approx(ci.mean, rel=1e-12) and got["n"] == 5, name
    # the figures that need predictions.pt are there (PIT, coverage, risk-coverage, per task)
    assert len(payload["figures"]) == 4
    md = (out / "report.md").read_text()
    assert f"{runs[0][1].summary['crps'].mean:.3f}"[:4] in md
    # default output folder: RUN_DIR/report of the first run
    assert main(["report", str(runs[0][0])]) == 0
    assert (runs[0][0] / "report" / "report.html").is_file()
