"""Every CLI error path: one line ``bayesmeta: error: ...``, a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from bayesmeta import __version__
from bayesmeta.cli import main
from bayesmeta.config import load_config

ROOT = Path(__file__).resolve().parents[1]
BASE = {
    "method": {"name": "maml"},
    "model": {"hidden": [4]},
    "tasks": {"name": "sinusoid", "k_shot": 3, "n_query": 3},
    "training": {"steps": 4, "val_episodes": 2, "val_every": 2, "checkpoint_every": 2, "log_every": 1},
    "evaluation": {"n_episodes": 3},
}


def _yaml(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _cfg(tmp_path: Path, **sections: dict) -> Path:
    cfg = {k: dict(v) for k, v in BASE.items()}
    for sec, opts in sections.items():
        cfg[sec] = {**cfg.get(sec, {}), **opts}
    return _yaml(tmp_path, yaml.safe_dump(cfg))


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("bayesmeta: error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_seed_that_is_not_an_integer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _yaml(tmp_path, yaml.safe_dump(BASE).replace("val_episodes: 2", "val_episodes: 2\n  seed: abc"))
    msg = _error(capsys, ["train", str(cfg), "--run-dir", str(tmp_path / "r")])
    assert "training.seed" in msg and "'abc'" in msg
    assert not (tmp_path / "r").exists()  # refused before anything is written


def test_run_dir_naming_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    msg = _error(capsys, ["train", str(_cfg(tmp_path)), "--run-dir", str(f)])
    assert "run_dir" in msg and "file" in msg
    msg = _error(capsys, ["train", str(_cfg(tmp_path)), "--run-dir", str(f / "sub")])
    assert "run_dir" in msg
    msg = _error(capsys, ["evaluate", str(f)])
    assert "run_dir" in msg


def test_duplicate_yaml_keys_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = "method: {name: maml}\ntasks: {name: sinusoid}\ntraining:\n  lr: 0.1\n  steps: 2\n  lr: 0.001\n"
    cfg = _yaml(tmp_path, text)
    msg = _error(capsys, ["train", str(cfg), "--run-dir", str(tmp_path / "r")])
    assert "duplicate key 'lr'" in msg and "line 6" in msg and "line 4" in msg
    # also at the top level and inside flow mappings
    with pytest.raises(Exception, match="duplicate key 'method'"):
        load_config(_yaml(tmp_path, "method: {name: maml}\nmethod: {name: anil}\ntasks: {name: sinusoid}\n", "d.yaml"))
    with pytest.raises(Exception, match="duplicate key 'name'"):
        load_config(_yaml(tmp_path, "method: {name: maml, name: anil}\ntasks: {name: sinusoid}\n", "e.yaml"))


@pytest.mark.parametrize(
    ("section", "key", "value", "expect"),
    [
        ("evaluation", "n_episodes", -1, "evaluation.n_episodes: expected an integer >= 1, got -1"),
        ("evaluation", "tasks_per_batch", 0, "evaluation.tasks_per_batch"),
        ("training", "val_episodes", -1, "training.val_episodes: expected an integer >= 0, got -1"),
        ("training", "lr", -0.1, "training.lr"),
        ("training", "meta_batch_size", 2.5, "training.meta_batch_size"),
        ("training", "dtype", "float16", "training.dtype"),
        ("training", "device", "gpu", "training.device"),
        ("training", "max_minutes", 0, "training.max_minutes"),
        ("model", "hidden", "40", "model.hidden: expected a list of integers, got '40'"),
        ("method", "inner_steps", "3", "method.inner_steps: expected an integer, got '3'"),
        ("method", "first_order", "yes", "method.first_order"),
        ("tasks", "k_shot", 0, "tasks.k_shot"),
        ("tasks", "amplitude", [1.0], "tasks.amplitude: expected a list of 2 numbers"),
    ],
)
def test_every_option_is_validated_at_load_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], section: str, key: str, value: object, expect: str
) -> None:
    cfg = _cfg(tmp_path, **{section: {key: value}})
    msg = _error(capsys, ["train", str(cfg), "--run-dir", str(tmp_path / "r")])
    assert expect in msg, msg
    assert not (tmp_path / "r").exists()


def test_yaml_float_without_a_dot_is_a_number(tmp_path: Path) -> None:
    # YAML 1.1 reads 1e-3 as a string; a float option accepts it as the number it spells
    cfg = load_config(_yaml(tmp_path, yaml.safe_dump(BASE).replace("steps: 4", "steps: 4\n  lr: 1e-3")))
    assert cfg["training"]["lr"] == 1e-3


def test_refused_malicious_checkpoint_has_no_torch_retry_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "r"
    assert main(["train", str(_cfg(tmp_path)), "--run-dir", str(run), "--no-progress"]) == 0
    capsys.readouterr()

    class Payload:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, ("echo pwned",))

    torch.save({"format": "bayesmeta-checkpoint-v1", "x": Payload()}, run / "checkpoints" / "best.pt")
    msg = _error(capsys, ["evaluate", str(run), "--no-progress"])
    assert "refused" in msg and "system" in msg
    assert "weights_only=False" not in msg and "will likely succeed" not in msg and "\x1b" not in msg


def test_steps_below_the_checkpoint_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg, run = _cfg(tmp_path), tmp_path / "r"
    assert main(["train", str(cfg), "--run-dir", str(run), "--no-progress"]) == 0
    capsys.readouterr()
    msg = _error(capsys, ["train", str(cfg), "--run-dir", str(run), "--steps", "2", "--no-progress"])
    assert "below" in msg and "(4)" in msg
    assert main(["train", str(cfg), "--run-dir", str(run), "--no-progress"]) == 0
    assert "already trained to step 4" in capsys.readouterr().out
    assert main(["train", str(cfg), "--run-dir", str(run), "--steps", "6", "--no-progress"]) == 0
    assert "resumed at step 4" in capsys.readouterr().out


def test_unavailable_device_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    msg = _error(capsys, ["train", str(_cfg(tmp_path)), "--run-dir", str(tmp_path / "r"), "--device", "cuda"])
    assert "'cuda' is not available" in msg and "available: cpu" in msg
    assert not (tmp_path / "r").exists()


def test_bad_command_lines_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _cfg(tmp_path)
    for argv in (
        ["train", str(cfg)],  # --run-dir missing
        ["train", str(cfg), "--run-dir", "r", "--steps", "abc"],
        ["train", str(cfg), "--run-dir", "r", "--steps", "0"],
        ["evaluate", "r", "--episodes", "-3"],
        ["evaluate", "r", "--dtype", "float16"],
        ["nope"],
        [],
    ):
        msg = _error(capsys, argv)
        assert "--help" in msg
    msg = _error(capsys, ["train", str(tmp_path / "missing.yaml"), "--run-dir", "r"])
    assert "missing.yaml" in msg
    msg = _error(capsys, ["train", str(tmp_path), "--run-dir", "r"])
    assert "directory" in msg
    msg = _error(capsys, ["report", str(tmp_path / "none")])
    assert "run_dir" in msg


def test_version_help_and_python_m(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"bayesmeta {__version__}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "bayesmeta", "--version"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == f"bayesmeta {__version__}"
    proc = subprocess.run([sys.executable, "-m", "bayesmeta", "evaluate", "/nonexistent"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("bayesmeta: error:") and "Traceback" not in proc.stderr


@pytest.mark.parametrize("command", ["train", "evaluate", "report", "demo"])
def test_every_argument_has_help(command: str) -> None:
    from bayesmeta.cli import _parser

    parser = _parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]  # type: ignore[union-attr]
    for action in sub._actions:
        assert action.help, f"{command} {action.dest} has no help text"
    assert all(a.help for a in parser._actions)
