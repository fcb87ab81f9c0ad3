"""Two gloo processes on 127.0.0.1 against one process (issue 15).

Each test launches ``torchrun`` (as ``python -m torch.distributed.run``, this interpreter) with
tiny configs and few steps; the one-process references run in the test process.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from bayesmeta.evaluation import load_predictions
from bayesmeta.runs import evaluate_run, train_run
from bayesmeta.training import load_checkpoint, read_metrics

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("_die_worker.py")

#: 5 tasks per meta-batch over 2 processes: 3 + 2, weights 3/5 and 2/5 (not divisible).
CONFIG = {
    "method": {"name": "maml", "inner_lr": 0.01, "inner_steps": 1},
    "model": {"name": "mlp", "hidden": [16, 16]},
    "tasks": {"name": "sinusoid", "k_shot": 5, "n_query": 5},
    "training": {
        "steps": 6, "meta_batch_size": 5, "lr": 0.01, "seed": 3, "val_episodes": 4, "val_every": 3,
        "checkpoint_every": 3, "log_every": 1,
    },
    "evaluation": {"n_episodes": 10, "seed": 1234, "tasks_per_batch": 3},
}


def _env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **extra}


def _torchrun(*args: str, nproc: int = 2, extra: tuple[str, ...] = (), env: dict[str, str] | None = None,
              timeout: float = 180) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *extra, *args]
    return subprocess.run(cmd, env=env or _env(), capture_output=True, text=True, timeout=timeout, cwd=REPO)


def _config(tmp_path: Path, **training: object) -> Path:
    cfg = json.loads(json.dumps(CONFIG))
    cfg["training"].update(training)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run)["learner"]


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        # float32: the two runs differ only in how each meta-gradient is summed (one process, or
        # two shards all-reduced), ~1e-7 relative per step; observed <= 3e-8 after 6 Adam steps.
        # A shard weighted wrongly (1/2 instead of 3/5) moves them by ~1e-3 (lr = 0.01).
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=1e-6, msg=k)


def _steps_logged(run: Path) -> list[int]:
    records, dropped = read_metrics(run / "metrics.jsonl")
    assert dropped == 0
    return [r["step"] for r in records if "loss" in r]


def _check(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"


def test_two_processes_follow_the_one_process_trajectory_and_resume_across_process_counts(tmp_path: Path) -> None:
    config = _config(tmp_path)
    ref = tmp_path / "one"
    train_run(config, ref, progress=False)

    # 2 processes from scratch to step 3, then 1 process from its checkpoint to step 6
    two = tmp_path / "two"
    _check(_torchrun("-m", "bayesmeta", "train", str(config), "--run-dir", str(two), "--steps", "3", "--no-progress"))
    assert load_checkpoint(two)["step"] == 3
    two_then_one = tmp_path / "two_then_one"
    shutil.copytree(two, two_then_one)
    train_run(config, two_then_one, progress=False)

    # 1 process to step 3, then 2 processes from its checkpoint to step 6
    one_then_two = tmp_path / "one_then_two"
    train_run(config, one_then_two, steps=3, progress=False)
    proc = _torchrun("-m", "bayesmeta", "train", str(config), "--run-dir", str(one_then_two), "--no-progress")
    _check(proc)
    assert proc.stdout.count("trained to step 6 (resumed at step 3)") == 1  # rank 0 alone prints

    for run in (two_then_one, one_then_two):
        _assert_same_weights(ref, run)
        assert _steps_logged(run) == [1, 2, 3, 4, 5, 6]  # rank 0 alone logs: each step once
    # the logged meta-batch losses are the task-weighted means over both processes
    ref_loss = {r["step"]: r["loss"] for r in read_metrics(ref / "metrics.jsonl")[0] if "loss" in r}
    for r in read_metrics(two / "metrics.jsonl")[0]:
        if "loss" in r:
            assert r["loss"] == pytest.approx(ref_loss[r["step"]], rel=1e-5)  # float32 sums
    info = json.loads((one_then_two / "run_info.json").read_text())
    assert info["world_size"] == 1 and info["resumed_with"][-1]["world_size"] == 2


def test_two_process_evaluation_gathers_the_one_process_results(tmp_path: Path) -> None:
    config = _config(tmp_path, steps=3, val_episodes=0)
    run = tmp_path / "run"
    train_run(config, run, progress=False)
    single = evaluate_run(run, out_dir=tmp_path / "single", max_tasks_per_call=2, progress=False)
    proc = _torchrun("-m", "bayesmeta", "evaluate", str(run), "--max-tasks-per-call", "2", "--no-progress")
    _check(proc)
    assert proc.stdout.count("per-task results in") == 1
    # bitwise: every task is computed in the same call with the same seed, whichever process runs it
    assert (run / "eval" / "per_task.jsonl").read_bytes() == (tmp_path / "single" / "per_task.jsonl").read_bytes()
    pa, ya, ma = load_predictions(run / "eval")
    pb, yb, mb = load_predictions(tmp_path / "single")
    assert torch.equal(ya, yb) and ma is None and mb is None
    assert torch.equal(pa.sample_mean, pb.sample_mean) and torch.equal(pa.sample_variance, pb.sample_variance)
    summary = json.loads((run / "eval" / "summary.json").read_text())
    assert summary["n_tasks"] == single.n_tasks == 10
    assert summary["episode_fingerprint"] == single.episode_fingerprint


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_dying_process_stops_the_run_with_a_clear_error_and_the_checkpoint_survives(tmp_path: Path) -> None:
    """Two processes started by hand (no torchrun agent to kill the survivor first): rank 1
    dies after step 4; rank 0 must stop with a DistributedError and last.pt stays at step 3."""
    config = _config(tmp_path)
    run = tmp_path / "run"
    port = str(_free_port())
    procs = []
    for rank in range(2):
        env = _env(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=port,
                   DIE_RANK="1", DIE_STEP="4", DIE_MARKER=str(tmp_path / "died"))
        cmd = [sys.executable, str(WORKER), "train", str(config), "--run-dir", str(run), "--no-progress"]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO))
    outs = [p.communicate(timeout=180) for p in procs]
    assert procs[1].returncode == 17 and (tmp_path / "died").exists()
    assert procs[0].returncode == 2, outs[0]
    err = outs[0][1]
    assert "bayesmeta: error: rank 0/2 (gloo, cpu): the gradient all-reduce at step 5 failed" in err, err
    assert "another process died" in err and "run the same command again to resume" in err
    assert "Traceback" not in err
    assert load_checkpoint(run)["step"] == 3
    # resuming (here in one process) continues from the intact checkpoint to the same end
    ref = tmp_path / "ref"
    train_run(config, ref, progress=False)
    train_run(config, run, progress=False)
    _assert_same_weights(ref, run)
    assert _steps_logged(run) == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
def test_torchrun_max_restarts_resumes_from_the_last_checkpoint(tmp_path: Path) -> None:
    config = _config(tmp_path)
    run, ref = tmp_path / "run", tmp_path / "ref"
    env = _env(DIE_RANK="1", DIE_STEP="5", DIE_MARKER=str(tmp_path / "died"))
    proc = _torchrun(str(WORKER), "train", str(config), "--run-dir", str(run), "--no-progress",
                     extra=("--max-restarts=1",), env=env, timeout=300)
    _check(proc)
    assert (tmp_path / "died").exists()  # the first attempt did die
    assert "resumed at step 3" in proc.stdout
    train_run(config, ref, progress=False)
    _assert_same_weights(ref, run)
    assert _steps_logged(run) == [1, 2, 3, 4, 5, 6]  # the dead attempt's steps 4-5 were dropped


def test_a_learner_drawing_by_task_count_is_warned_about_and_kept_in_step(tmp_path: Path) -> None:
    _check(_torchrun(str(Path(__file__).with_name("_rng_worker.py")), str(tmp_path)))
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    assert (r0["warnings"], r1["warnings"]) == (1, 0)  # rank 0 warns, once
    assert r0["checksum"] == r1["checksum"]  # both processes still hold the very same weights
