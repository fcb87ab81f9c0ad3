"""``benchmarks/paired_eval.py``: paired per-task comparison of two saved evaluations."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "paired_eval.py"


def _eval_dir(path: Path, ece: np.ndarray, fingerprint: str = "abc", calibrated: np.ndarray | None = None) -> Path:
    path.mkdir()
    summary = {"episode_fingerprint": fingerprint, **({"calibrated": {}} if calibrated is not None else {})}
    (path / "summary.json").write_text(json.dumps(summary))
    rows = [{"accuracy": 0.9, "ece": float(e), "nll": 0.3, "brier": 0.1} for e in ece]
    (path / "per_task.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    if calibrated is not None:
        rows = [{"accuracy": 0.9, "ece": float(e), "nll": 0.3, "brier": 0.1} for e in calibrated]
        (path / "calibrated_per_task.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=REPO)


def test_differences_are_per_task_paired_and_the_calibrated_suffix_reads_the_calibrated_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    task_effect = rng.uniform(0.0, 0.2, 200)  # large between-task spread, as in few-shot results
    a = task_effect + 0.01
    b = task_effect + rng.normal(0.0, 0.001, 200)
    _eval_dir(tmp_path / "a", a)
    _eval_dir(tmp_path / "b", b, calibrated=task_effect + 0.02)
    out = _run(str(tmp_path / "a"), str(tmp_path / "b"))
    assert out.returncode == 0, out.stderr
    ece = json.loads(out.stdout)["a_minus_b"]["ece"]
    assert abs(ece["diff"] - (a.mean() - b.mean())) < 1e-12 and abs(ece["a"] - a.mean()) < 1e-12
    # paired: the 0.01 shift is resolved despite the 0.2 spread between tasks
    assert ece["low"] > 0.0 and ece["p_value"] < 0.01 and ece["n_tasks"] == 200
    out = _run(str(tmp_path / "a"), f"{tmp_path / 'b'}:calibrated")
    ece = json.loads(out.stdout)["a_minus_b"]["ece"]
    assert abs(ece["diff"] - (-0.01)) < 1e-12 and ece["high"] < 0.0


def test_different_episodes_and_bad_arguments_are_refused(tmp_path: Path) -> None:
    _eval_dir(tmp_path / "a", np.zeros(5), fingerprint="one")
    _eval_dir(tmp_path / "b", np.zeros(5), fingerprint="two")
    out = _run(str(tmp_path / "a"), str(tmp_path / "b"))
    assert out.returncode != 0 and "different episodes" in out.stderr
    out = _run(str(tmp_path / "a"), f"{tmp_path / 'a'}:raw")
    assert out.returncode != 0 and "suffix" in out.stderr
    out = _run(str(tmp_path / "a"), f"{tmp_path / 'a'}:calibrated")  # written without --calibrate
    assert out.returncode != 0 and "without --calibrate" in out.stderr
