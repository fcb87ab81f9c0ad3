"""One seed makes a run reproducible end to end, through the CLI, across fresh processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from bayesmeta.config import resolve_config
from bayesmeta.evaluation import episode_fingerprint
from bayesmeta.runs import evaluate_run, init_learner, train_run
from bayesmeta.tasks import Sinusoid, fixed_episodes, iter_episodes

ROOT = Path(__file__).resolve().parents[1]

# PLATIPUS samples inside meta_loss (global RNG) and its weights are random at init: the
# strongest check that init, task sampling and learner sampling all follow the seed.
CONFIG = {
    "method": {"name": "platipus", "inner_steps": 1, "n_samples": 2},
    "model": {"hidden": [8]},
    "tasks": {"name": "sinusoid", "k_shot": 5, "n_query": 5},
    "training": {"steps": 6, "meta_batch_size": 3, "seed": 11, "val_episodes": 2, "val_every": 3,
                 "checkpoint_every": 3, "log_every": 1},
    "evaluation": {"n_episodes": 4, "seed": 5},
}


def _cli_train(config: Path, run: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    code = "import torch, sys; torch.set_num_threads(1); from bayesmeta.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run(
        [sys.executable, "-c", code, "train", str(config), "--run-dir", str(run), "--no-progress"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr


def test_two_fresh_processes_write_identical_checkpoints_and_logs(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    runs = [tmp_path / "a", tmp_path / "b"]
    for run in runs:
        _cli_train(config, run)
    a, b = runs
    assert (a / "metrics.jsonl").read_bytes() == (b / "metrics.jsonl").read_bytes()
    assert (a / "run_info.json").read_bytes() == (b / "run_info.json").read_bytes()
    for name in ("last.pt", "best.pt"):
        ca = torch.load(a / "checkpoints" / name, weights_only=True)
        cb = torch.load(b / "checkpoints" / name, weights_only=True)
        for k, v in ca["learner"].items():
            assert torch.equal(v, cb["learner"][k]), k
        assert torch.equal(ca["rng"]["torch"], cb["rng"]["torch"])
        assert (a / "checkpoints" / name).read_bytes() == (b / "checkpoints" / name).read_bytes()
    # the check can fail: another seed gives other weights and other losses
    other = dict(CONFIG, training={**CONFIG["training"], "seed": 12})
    config.write_text(yaml.safe_dump(other))
    _cli_train(config, tmp_path / "c")
    assert (tmp_path / "c" / "metrics.jsonl").read_bytes() != (a / "metrics.jsonl").read_bytes()


def test_run_info_records_versions_and_fingerprints(tmp_path: Path) -> None:
    train_run(CONFIG, tmp_path / "r", progress=False)
    info = json.loads((tmp_path / "r" / "run_info.json").read_text())
    assert info["versions"]["torch"] == torch.__version__
    assert info["versions"]["python"] == ".".join(map(str, sys.version_info[:3]))
    assert len(info["config_sha256"]) == 64 and len(info["config_fingerprint"]) == 64
    assert info["seed"] == 11 and info["dtype"] == "float32" and info["device"] == "cpu"


def test_initial_weights_follow_the_seed_and_leave_the_global_rng_alone() -> None:
    cfg = resolve_config(CONFIG)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    w1 = init_learner(cfg).state_dict()
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(999)  # whatever ran before does not matter
    w2 = init_learner(cfg).state_dict()
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    cfg["training"]["seed"] = 12
    w3 = init_learner(cfg).state_dict()
    assert any(not torch.equal(w1[k], w3[k]) for k in w1)


def test_evaluation_is_reproducible_and_fingerprints_the_episodes(tmp_path: Path) -> None:
    trained = train_run(CONFIG, tmp_path / "r", progress=False)
    r1 = evaluate_run(tmp_path / "r", progress=False, out_dir=tmp_path / "e1")
    r2 = evaluate_run(tmp_path / "r", progress=False, out_dir=tmp_path / "e2")
    assert r1.episode_fingerprint == r2.episode_fingerprint and len(r1.episode_fingerprint) == 64
    for k in r1.per_task:
        assert torch.equal(r1.per_task[k], r2.per_task[k]), k
    s1 = json.loads((tmp_path / "e1" / "summary.json").read_text())
    assert s1["episode_fingerprint"] == r1.episode_fingerprint
    proto = s1["protocol"]
    assert (proto["checkpoint"], proto["steps_trained"]) == ("best", trained.best_step)
    assert proto["training_seed"] == 11 and proto["evaluation_seed"] == 5 and proto["n_episodes"] == 4
    # another evaluation seed: other episodes, another fingerprint
    cfg = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    cfg["evaluation"]["seed"] = 6
    (tmp_path / "r" / "config.yaml").write_text(yaml.safe_dump(cfg))
    r3 = evaluate_run(tmp_path / "r", progress=False, out_dir=tmp_path / "e3")
    assert r3.episode_fingerprint != r1.episode_fingerprint


def test_episode_fingerprint_ignores_batching_but_sees_every_value() -> None:
    src = Sinusoid(k_shot=3, n_query=4)
    one = episode_fingerprint(fixed_episodes(src, 6, seed=1, tasks_per_batch=1))
    three = episode_fingerprint(fixed_episodes(src, 6, seed=1, tasks_per_batch=4))
    lazy = episode_fingerprint(iter_episodes(src, 6, seed=1, tasks_per_batch=4))
    assert one == three == lazy
    eps = fixed_episodes(src, 6, seed=1)
    eps[5].query_y[0, 0, 0] += 1e-6
    assert episode_fingerprint(eps) != one
    assert episode_fingerprint(fixed_episodes(src, 5, seed=1)) != one


def test_iter_episodes_matches_fixed_episodes() -> None:
    src = Sinusoid(k_shot=3, n_query=4)
    a = fixed_episodes(src, 7, seed=3, tasks_per_batch=3)
    b = list(iter_episodes(src, 7, seed=3, tasks_per_batch=3))
    assert len(a) == len(b) == 3
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x.support_x, y.support_x) and torch.equal(x.query_y, y.query_y)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA path: needs a GPU")
def test_cuda_training_is_reproducible(tmp_path: Path) -> None:  # pragma: no cover - GPU only
    cfg = dict(CONFIG, training={**CONFIG["training"], "device": "cuda"})
    r1 = train_run(cfg, tmp_path / "a", progress=False)
    r2 = train_run(cfg, tmp_path / "b", progress=False)
    assert r1.steps == r2.steps == 6
    ca = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=True)
    cb = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)
    assert "cuda" in ca["rng"]
    for k, v in ca["learner"].items():
        assert v.device.type == "cuda" and torch.equal(v, cb["learner"][k]), k
    res = evaluate_run(tmp_path / "a", progress=False)
    assert res.protocol["device"].startswith("cuda")
