"""Config validation, the CLI end to end on a tiny budget, and its error handling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from bayesmeta.cli import main
from bayesmeta.config import build_learner, load_config, resolve_config
from bayesmeta.exceptions import ConfigError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "configs"
BENCHMARK_CONFIGS = Path(__file__).resolve().parents[1] / "benchmarks" / "configs"


def _write(tmp_path: Path, cfg: dict) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_unknown_keys_methods_and_sections_are_named_with_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown method 'mamll'; valid choices are: .*maml, matching, metasgd, np, platipus, protonet, reptile"):
        resolve_config({"method": {"name": "mamll"}, "tasks": {"name": "sinusoid"}})
    with pytest.raises(ConfigError, match=r"method: unknown key\(s\) 'inner_lrr'.*inner_lr"):
        resolve_config({"method": {"name": "maml", "inner_lrr": 0.1}, "tasks": {"name": "sinusoid"}})
    with pytest.raises(ConfigError, match=r"config: unknown key\(s\) 'trainnig'"):
        resolve_config({"method": {"name": "maml"}, "tasks": {"name": "sinusoid"}, "trainnig": {}})
    with pytest.raises(ConfigError, match=r"tasks: unknown key\(s\) 'shots'.*k_shot"):
        resolve_config({"method": {"name": "maml"}, "tasks": {"name": "sinusoid", "shots": 5}})
    with pytest.raises(ConfigError, match=r"training: unknown key\(s\) 'epochs'"):
        load_config(_write(tmp_path, {"method": {"name": "maml"}, "tasks": {"name": "sinusoid"}, "training": {"epochs": 3}}))
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    "path", sorted([*EXAMPLES.glob("*.yaml"), *BENCHMARK_CONFIGS.glob("*.yaml")]), ids=lambda p: p.parent.parent.name + "/" + p.name
)
def test_every_example_config_resolves_and_builds(path: Path) -> None:
    cfg = load_config(path)
    learner = build_learner(cfg)
    assert sum(p.numel() for p in learner.parameters()) > 0


def test_variant_names_set_their_options() -> None:
    base = {"tasks": {"name": "sinusoid"}}
    assert build_learner(resolve_config({**base, "method": {"name": "fomaml"}})).first_order
    assert build_learner(resolve_config({**base, "method": {"name": "metasgd"}})).inner_lrs is not None
    assert build_learner(resolve_config({**base, "method": {"name": "anil"}})).adapted_names == ("head.weight", "head.bias")


def _tiny_maml(**training: int) -> dict:
    """MAML on 5-shot sinusoids with an 8-unit MLP: a config the CLI trains in a second."""
    return {
        "method": {"name": "maml", "inner_lr": 0.01},
        "model": {"name": "mlp", "hidden": [8]},
        "tasks": {"name": "sinusoid", "k_shot": 5, "n_query": 5},
        "training": {"meta_batch_size": 2, "val_episodes": 2, "log_every": 1, **training},
    }


def test_cli_train_evaluate_resume_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _tiny_maml(steps=6, val_every=3, checkpoint_every=3)
    cfg["evaluation"] = {"n_episodes": 6, "tasks_per_batch": 4}
    path, run = _write(tmp_path, cfg), tmp_path / "run"
    assert main(["train", str(path), "--run-dir", str(run), "--no-progress"]) == 0
    assert main(["evaluate", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    summary = json.loads((run / "eval" / "summary.json").read_text())
    row = next(ln for ln in out.splitlines() if ln.startswith("maml "))
    for name in ("mse", "nll", "crps"):  # the printed table shows summary.json's numbers
        ci = summary["metrics"][name]
        assert f"{ci['mean']:.3f} ± {(ci['high'] - ci['low']) / 2:.3f}" in row, name
    assert summary["n_tasks"] == 6 and summary["task_kind"] == "regression"
    assert len((run / "eval" / "per_task.jsonl").read_text().splitlines()) == 6
    # training further resumes from step 6
    assert main(["train", str(path), "--run-dir", str(run), "--steps", "9", "--no-progress"]) == 0
    steps = [json.loads(ln)["step"] for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 9 and steps.count(7) == 1


def test_cli_train_cpu_budget_stops_checkpoints_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _tiny_maml(steps=50, val_every=100, checkpoint_every=100)
    path, run = _write(tmp_path, cfg), tmp_path / "run"
    # a budget one step's CPU time cannot fit: the call stops after the step that exhausted it
    assert main(["train", str(path), "--run-dir", str(run), "--max-cpu-seconds", "1e-6", "--no-progress"]) == 0
    out = capsys.readouterr().out
    records = map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
    steps = [r["step"] for r in records if "loss" in r]  # training records, not validation ones
    stopped = max(steps)
    assert stopped <= 2, steps
    assert f"stopped by the time budget before step 50; the same command resumes from step {stopped}" in out
    assert (run / "checkpoints" / "last.pt").exists()
    # without a budget the same command finishes the run from there
    assert main(["train", str(path), "--run-dir", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"trained to step 50 (resumed at step {stopped})" in out and "time budget" not in out
    for flag in ("--max-cpu-seconds", "--max-minutes"):
        for bad, expected in (("0", "a positive finite number"), ("-3", "a positive finite number"),
                              ("inf", "a positive finite number"), ("soon", "a number")):
            assert main(["train", str(path), "--run-dir", str(run), flag, bad]) == 2
            assert f"argument {flag}: expected {expected}, got '{bad}'" in capsys.readouterr().err


def test_cli_reports_library_errors_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = _write(tmp_path, {"method": {"name": "nope"}, "tasks": {"name": "sinusoid"}})
    assert main(["train", str(bad), "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bayesmeta: error: method.name: unknown method 'nope'")
    assert "Traceback" not in err
    assert main(["evaluate", str(tmp_path / "not-a-run")]) == 2
    assert "no config.yaml" in capsys.readouterr().err


def test_cli_refuses_to_resume_a_run_with_another_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = {"method": {"name": "maml"}, "model": {"hidden": [4]}, "tasks": {"name": "sinusoid"},
           "training": {"steps": 2, "val_episodes": 0}}
    run = tmp_path / "run"
    assert main(["train", str(_write(tmp_path, cfg)), "--run-dir", str(run), "--no-progress"]) == 0
    cfg["method"]["inner_lr"] = 0.3
    assert main(["train", str(_write(tmp_path, cfg)), "--run-dir", str(run), "--no-progress"]) == 2
    assert "different config" in capsys.readouterr().err


def test_feature_based_methods_get_headless_backbones_so_every_parameter_learns() -> None:
    import torch

    from bayesmeta.config import build_episodes

    for method in ({"name": "versa", "n_samples": 2}, {"name": "dkt"}, {"name": "protonet"}):
        tasks = {"name": "sinusoid", "k_shot": 4, "n_query": 4} if method["name"] != "protonet" else {
            "name": "omniglot", "n_way": 3, "k_shot": 1, "n_query": 1}
        cfg = resolve_config({"method": method, "tasks": tasks,
                              "model": {"name": "mlp", "hidden": [8]} if method["name"] != "protonet" else {"name": "conv4", "hidden": 8},
                              "evaluation": {"n_episodes": 2, "tasks_per_batch": 2}})
        learner = build_learner(cfg)
        learner.meta_loss(build_episodes(cfg, "test")[0]).loss.backward()
        missing = [n for n, p in learner.named_parameters() if p.grad is None]
        assert not missing, (method["name"], missing)
        assert torch.isfinite(torch.stack([p.grad.abs().sum() for p in learner.parameters()])).all()


def test_load_learner_and_cli_evaluate_choose_the_checkpoint_and_episodes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``load_learner(checkpoint=...)`` and ``evaluate --checkpoint`` load the checkpoint asked
    for (best.pt is rewritten here with weights scaled by 0.5, so the two surely differ);
    ``--episodes`` overrides the number of evaluation tasks."""
    import torch

    from bayesmeta.runs import load_learner
    from bayesmeta.training import load_checkpoint, save_checkpoint

    cfg = {
        "method": {"name": "maml", "inner_lr": 0.01},
        "model": {"name": "mlp", "hidden": [8]},
        "tasks": {"name": "sinusoid", "k_shot": 5, "n_query": 5},
        "training": {"steps": 4, "meta_batch_size": 2, "val_episodes": 2, "val_every": 2, "checkpoint_every": 2,
                     "log_every": 1},
        "evaluation": {"n_episodes": 4, "tasks_per_batch": 2},
    }
    path, run = _write(tmp_path, cfg), tmp_path / "run"
    assert main(["train", str(path), "--run-dir", str(run), "--no-progress"]) == 0
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    best = {**last, "learner": {k: 0.5 * v if v.is_floating_point() else v for k, v in last["learner"].items()}}
    best.pop("format")
    save_checkpoint(run / "checkpoints" / "best.pt", best)
    for name, ck in (("best", best), ("last", last)):
        learner, _ = load_learner(run, checkpoint=name)
        for k, v in learner.state_dict().items():
            assert torch.equal(v, ck["learner"][k]), (name, k)
    # --episodes and --checkpoint through the CLI
    scores = {}
    for name in ("last", "best"):
        assert main(["evaluate", str(run), "--checkpoint", name, "--episodes", "3", "--no-progress"]) == 0
        summary = json.loads((run / "eval" / "summary.json").read_text())
        assert summary["n_tasks"] == 3 and len((run / "eval" / "per_task.jsonl").read_text().splitlines()) == 3
        scores[name] = summary["metrics"]["mse"]["mean"]
    assert scores["best"] != scores["last"]
    # a run without best.pt falls back to last for "best", but "last" missing is an error
    (run / "checkpoints" / "best.pt").unlink()
    learner, _ = load_learner(run, checkpoint="best")
    assert all(torch.equal(v, last["learner"][k]) for k, v in learner.state_dict().items())
    (run / "checkpoints" / "last.pt").unlink()
    assert main(["evaluate", str(run), "--checkpoint", "last", "--no-progress"]) == 2
    assert "not found" in capsys.readouterr().err


def test_training_defaults_are_the_trainers_own() -> None:
    """One place for each default: the config's training section reads MetaTrainer's signature."""
    import inspect

    from bayesmeta.config import TRAINING_DEFAULTS
    from bayesmeta.training import MetaTrainer

    params = inspect.signature(MetaTrainer.__init__).parameters
    # val_episodes means a count in a config and the built episodes in MetaTrainer
    # (MetaTrainer requires `steps`, so a config's default for it is the config's own)
    shared = [
        k for k in TRAINING_DEFAULTS
        if k in params and k != "val_episodes" and params[k].default is not inspect.Parameter.empty
    ]
    assert {"meta_batch_size", "lr", "grad_clip", "seed", "val_every", "checkpoint_every", "log_every"} <= set(shared)
    for key in shared:
        assert TRAINING_DEFAULTS[key] == params[key].default, key
