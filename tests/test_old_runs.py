"""Run directories written by bayesmeta 0.1 (cross-task batch statistics in Conv4) never change
meaning silently: they are refused with a CheckpointError that says how to continue, or, where
the meaning can be kept (an explicit ``norm: batch``), loaded with a warning (issue 9, item 4)."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
import torch
import yaml

from bayesmeta.exceptions import CheckpointError
from bayesmeta.inference import ProtoNet
from bayesmeta.models import Conv4
from bayesmeta.runs import load_learner
from bayesmeta.training import config_fingerprint, save_checkpoint


def _v1_protonet_state() -> collections.OrderedDict:
    """A ProtoNet state dict laid out as 0.1 saved it: conv biases, BatchStatNorm weight/bias,
    state-dict metadata version 1 for the Conv4."""
    torch.manual_seed(0)
    sd = ProtoNet(Conv4(hidden=8, norm="layer")).state_dict()  # layer norm: the same keys as 0.1's batch norm
    out = collections.OrderedDict((k, v.clone()) for k, v in sd.items())
    out._metadata = {k: {"version": 1} for k in sd._metadata}  # type: ignore[attr-defined]
    return out


def _old_run(tmp_path: Path, model: dict) -> Path:
    cfg = {
        "method": {"name": "protonet"},
        "model": model,
        "tasks": {"name": "omniglot", "n_way": 5, "k_shot": 1, "n_query": 2},
        "training": {"steps": 1, "meta_batch_size": 1, "lr": 0.001, "seed": 0},
        "evaluation": {"n_episodes": 2, "seed": 1, "tasks_per_batch": 2},
    }
    from bayesmeta.config import resolve_config

    cfg = resolve_config(cfg)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    save_checkpoint(run / "checkpoints" / "last.pt", {
        "step": 1, "learner": _v1_protonet_state(), "config_fingerprint": config_fingerprint(cfg),
        "best_val": None, "best_step": None,
    })
    return run


def test_an_old_default_run_is_refused_with_a_way_forward(tmp_path: Path) -> None:
    run = _old_run(tmp_path, {"name": "conv4", "hidden": 8})  # 0.1 default: cross-task batch norm
    with pytest.raises(CheckpointError, match="bayesmeta 0.1.*retrain"):
        load_learner(run, "last")


def test_an_old_explicit_batch_norm_run_loads_with_a_warning(tmp_path: Path) -> None:
    run = _old_run(tmp_path, {"name": "conv4", "hidden": 8, "norm": "batch"})
    with pytest.warns(UserWarning, match="statistics per task"):
        learner, _ = load_learner(run, "last")
    want = _v1_protonet_state()
    got = learner.state_dict()
    for k, v in got.items():
        torch.testing.assert_close(v, want[k], rtol=0, atol=0, msg=k)
    # the conv biases were dropped: a bias before a per-channel mean subtraction has no effect
    assert "backbone.body.0.bias" in want and "backbone.body.0.bias" not in got
