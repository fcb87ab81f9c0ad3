"""`bayesmeta study`: pre-flight checks, cross-domain and leave-one-dataset-out runs, the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from bayesmeta.cli import main
from bayesmeta.exceptions import ConfigError
from bayesmeta.study import load_study, plan_folds, resolve_study, run_study

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "configs" / "medical"
_TINY = {"name": "conv4", "norm": "group", "hidden": 8}


def _study(**over):
    base = {
        "name": "tiny",
        "protocol": "cross_domain",
        "methods": {
            "protonet": {"method": {"name": "protonet"}, "model": _TINY},
            "maml": {"method": {"name": "maml", "inner_lr": 0.1}, "model": _TINY},
        },
        "meta_train": {"name": "mednist", "n_way": 2, "k_shot": 2, "n_query": 3, "class_identity": "random"},
        "training": {"steps": 2, "meta_batch_size": 2, "val_episodes": 2, "val_every": 2, "checkpoint_every": 2},
        "datasets": {
            "pneumoniamnist": {"tasks": {"name": "medmnist", "dataset": "pneumoniamnist", "k_shot": 2, "n_query": 4,
                                         "prevalence": "natural", "support_split": "train"}, "positive": 1},
            "retinamnist": {"tasks": {"name": "medmnist", "dataset": "retinamnist", "k_shot": 2, "n_query": 4,
                                      "support_split": "train", "channels": "grey"}, "positive": [2, 3, 4]},
        },
        "evaluation": {"n_episodes": 4, "val_episodes": 4, "tasks_per_batch": 2},
        "referral": {"objective": "referral_rate", "max_referral": 0.3},
    }
    base.update(over)
    return base


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_example_studies_resolve(path):
    cfg = load_study(path)
    assert plan_folds(cfg)


def test_cross_domain_study_end_to_end(tmp_path):
    res = run_study(_study(), tmp_path / "s", progress=False)
    html = res.report.read_text()
    for text in ("Dataset: pneumoniamnist", "Dataset: retinamnist", "Reliability diagrams", "Referral curves",
                 "Decision curves", "balanced acc.", "sens. @ spec.", "Protocol cross_domain", "not evaluated"):
        assert text in html, text
    by = {(r.method, r.dataset): r for r in res.results}
    assert by[("maml", "retinamnist")].skipped and "2-way output head" in by[("maml", "retinamnist")].skipped
    pn = by[("protonet", "pneumoniamnist")]
    # the rule fitted on validation is applied unchanged to the test episodes
    from bayesmeta.metrics import predictive_entropy

    referred = (predictive_entropy(pn.predictive) > pn.rule.tau).double().mean(-1)
    assert pn.referral.summary["referral_rate"].mean == pytest.approx(float(referred.mean()))
    assert pn.clinical["prevalence"].mean == pytest.approx(5 / 8)  # natural: 62.5% of 8 queries
    d = tmp_path / "s" / "cross_domain" / "protonet" / "eval" / "pneumoniamnist"
    for f in ("summary.json", "per_task.jsonl", "predictions.pt", "clinical.json", "referral.json", "decision_curve.json"):
        assert (d / f).is_file(), f
    rule = json.loads((d / "referral.json").read_text())["rule"]
    assert rule["objective"] == "referral_rate" and rule["validation"]["referral_rate"] <= 0.3 + 1e-12
    report = json.loads((tmp_path / "s" / "report" / "report.json").read_text())
    assert set(report["datasets"]) == {"pneumoniamnist", "retinamnist"}
    # the same episodes for every method: identical targets
    import torch

    a = torch.load(d / "predictions.pt", weights_only=True)["targets"]
    b = torch.load(tmp_path / "s/cross_domain/maml/eval/pneumoniamnist/predictions.pt", weights_only=True)["targets"]
    assert torch.equal(a, b)


def test_train_one_method_at_a_time_then_evaluate(tmp_path):
    out = tmp_path / "s"
    run_study(_study(), out, methods=["protonet"], evaluate_methods=False, progress=False)
    assert (out / "cross_domain/protonet/study_trained.json").is_file() and not (out / "cross_domain/maml").exists()
    ckpt = (out / "cross_domain/protonet/checkpoints/last.pt").stat().st_mtime_ns
    res = run_study(_study(), out, progress=False)
    assert (out / "cross_domain/protonet/checkpoints/last.pt").stat().st_mtime_ns == ckpt  # not retrained
    assert res.report.is_file()


def test_leave_one_dataset_out_plans_and_runs(tmp_path):
    cfg = _study(
        protocol="leave_one_dataset_out",
        methods={"protonet": {"method": {"name": "protonet"}, "model": _TINY}},
        meta_train={"name": "medical_pool", "n_way": 2, "k_shot": 2, "n_query": 3, "channels": "grey"},
    )
    cfg["datasets"]["mednist"] = {"tasks": {"name": "mednist", "k_shot": 2, "n_query": 2, "classes": [2, 3]}, "positive": 0}
    folds = plan_folds(resolve_study(cfg))
    assert [f.name for f in folds] == ["without_pneumoniamnist", "without_retinamnist", "without_mednist"]
    assert folds[0].meta_train["datasets"] == ["retinamnist", "mednist"] and folds[0].datasets == ("pneumoniamnist",)
    res = run_study(cfg, tmp_path / "lodo", progress=False)
    assert {(r.fold, r.dataset) for r in res.results} == {(f.name, f.datasets[0]) for f in folds}
    assert "held-out" in res.report.read_text()


def test_bad_studies_fail_before_anything_is_written(tmp_path):
    out = tmp_path / "never"
    bad = _study()
    bad["datasets"]["retinamnist"]["tasks"].pop("channels")
    with pytest.raises(ConfigError, match=r"datasets.retinamnist with methods.protonet: .*3 channel.*channels='grey'"):
        run_study(bad, out, progress=False)
    small = _study()
    small["datasets"]["pneumoniamnist"]["tasks"].update(n_query=400, support_split=None)
    from bayesmeta.exceptions import DataError

    with pytest.raises(DataError, match=r"class 'normal' \(label 0\) of split 'pneumoniamnist/test' has 234 examples, asked for 2 support \+ 300 query"):
        run_study(small, out, progress=False)
    with pytest.raises(ConfigError, match="protocol"):
        resolve_study(_study(protocol="lodo"))
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'shots'"):
        run_study(_study(datasets={"x": {"tasks": {"name": "mednist", "shots": 1}}}), out, progress=False)
    with pytest.raises(ConfigError, match="medical_pool"):
        resolve_study(_study(protocol="leave_one_dataset_out"))
    assert not out.exists()


def test_cli_study(tmp_path, capsys):
    p = tmp_path / "study.yaml"
    p.write_text(yaml.safe_dump(_study(methods={"protonet": {"method": {"name": "protonet"}, "model": _TINY}})))
    assert main(["study", str(p), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    assert "study report written to" in capsys.readouterr().out
    assert main(["study", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err


def test_a_method_configured_for_another_n_way_is_listed_not_evaluated(tmp_path):
    """DKT's n_way option fixes its classes like a MAML head does: a 5-way dataset is skipped with the reason."""
    methods = {"dkt": {"method": {"name": "dkt", "n_way": 2}, "model": _TINY}}
    res = run_study(_study(methods=methods), tmp_path / "s", progress=False)
    by = {(r.method, r.dataset): r for r in res.results}
    assert by[("dkt", "pneumoniamnist")].skipped is None
    reason = by[("dkt", "retinamnist")].skipped
    assert reason and "method.n_way = 2" in reason and "5-way" in reason
