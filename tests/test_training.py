"""MetaTrainer: exact resume after a kill, atomic and safe checkpoints, config mismatch."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from bayesmeta.exceptions import CheckpointError, NumericalError
from bayesmeta.inference import MAML
from bayesmeta.models import MLP
from bayesmeta.tasks import Sinusoid
from bayesmeta.training import MetaTrainer, load_checkpoint, save_checkpoint

CONFIG = {"method": {"name": "maml"}, "tasks": {"name": "sinusoid"}, "training": {"lr": 1e-3}}


class Killed(Exception):
    """Stands in for SIGKILL: the process stops between two steps."""


def _trainer(run_dir: Path, steps: int = 20, callback=None, config=CONFIG) -> MetaTrainer:
    torch.manual_seed(123)  # model init; the trainer reseeds for its own randomness
    learner = MAML(MLP(1, 1, hidden=(16, 16)), inner_lr=0.01, task_kind="regression")
    return MetaTrainer(
        learner, Sinusoid(k_shot=5, n_query=5), steps=steps, meta_batch_size=4, lr=1e-3,
        seed=7, run_dir=run_dir, checkpoint_every=5, log_every=1, config=config,
        progress=False, callback=callback,
    )


def _losses(run_dir: Path) -> list[tuple[int, float]]:
    lines = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in lines if "loss" in r]


def test_killed_and_resumed_run_reproduces_the_uninterrupted_trajectory(tmp_path: Path) -> None:
    _trainer(tmp_path / "a").fit()

    def kill_at_13(step: int, _out) -> None:
        if step == 13:
            raise Killed

    with pytest.raises(Killed):
        _trainer(tmp_path / "b", callback=kill_at_13).fit()
    # the last checkpoint is from step 10; steps 11-13 were logged but are lost with the process
    assert load_checkpoint(tmp_path / "b")["step"] == 10
    resumed = _trainer(tmp_path / "b").fit()
    assert resumed.steps == 20
    a, b = _losses(tmp_path / "a"), _losses(tmp_path / "b")
    assert [s for s, _ in b] == list(range(1, 21))  # no duplicated lines from the killed tail
    assert a == b  # bitwise: same batches, same RNG, same optimizer state


def test_resume_refuses_a_checkpoint_from_a_different_config(tmp_path: Path) -> None:
    _trainer(tmp_path, steps=5).fit()
    other = {**CONFIG, "method": {"name": "maml", "inner_lr": 0.5}}
    with pytest.raises(CheckpointError, match="different config"):
        _trainer(tmp_path, steps=10, config=other).fit()
    # more steps with the same config is a resume, not a mismatch
    assert _trainer(tmp_path, steps=10).fit().steps == 10


def test_truncated_and_missing_checkpoints_raise_checkpoint_error(tmp_path: Path) -> None:
    _trainer(tmp_path, steps=5).fit()
    path = tmp_path / "checkpoints" / "last.pt"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")


class Payload:
    """An object whose unpickling would run code: it must never be executed."""

    executed = False

    def __reduce__(self):
        return (Payload._boom, ())

    @staticmethod
    def _boom() -> None:  # pragma: no cover - must not run
        Payload.executed = True


def test_checkpoint_with_pickled_object_is_refused_not_executed(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": "bayesmeta-checkpoint-v1", "step": 1, "x": Payload()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    assert not Payload.executed
    # ...while plain unpickling of the same payload does run it: the check above can fail.
    pickle.loads(pickle.dumps(Payload()))
    assert Payload.executed
    Payload.executed = False


def test_checkpoint_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"step": 1, "w": torch.ones(2)})

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint(path, {"step": 2, "w": torch.zeros(2)})
    monkeypatch.undo()
    ck = load_checkpoint(path)
    assert ck["step"] == 1 and torch.equal(ck["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temp files left behind


def test_nan_loss_stops_with_numerical_error(tmp_path: Path) -> None:
    tr = _trainer(tmp_path, steps=3)
    with torch.no_grad():
        next(tr.learner.model.parameters()).fill_(float("nan"))
    with pytest.raises(NumericalError, match="loss"):
        tr.fit()


def test_validation_keeps_best_checkpoint(tmp_path: Path) -> None:
    from bayesmeta.tasks import fixed_episodes

    tr = _trainer(tmp_path, steps=10)
    tr.val_episodes = fixed_episodes(Sinusoid(k_shot=5, n_query=5), 3, seed=1, tasks_per_batch=4)
    tr.val_every = 5
    res = tr.fit()
    assert res.best_step in (5, 10)
    assert (tmp_path / "checkpoints" / "best.pt").exists()
    vals = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert sum("val_mse" in v for v in vals) == 2


def test_validation_ignores_masked_query_points(tmp_path: Path) -> None:
    from bayesmeta.tasks import TaskBatch

    tr = _trainer(tmp_path, steps=1)
    b = Sinusoid(k_shot=5, n_query=4).sample(3, generator=torch.Generator().manual_seed(0))
    garbage = b.query_y.clone()
    garbage[:, 2:] = 1e3  # padded points with absurd targets
    mask = torch.zeros(3, 4, dtype=torch.bool)
    mask[:, :2] = True
    padded = TaskBatch(b.support_x, b.support_y, b.query_x, garbage, query_mask=mask)
    trimmed = TaskBatch(b.support_x, b.support_y, b.query_x[:, :2], b.query_y[:, :2])
    tr.val_episodes = [padded]
    v_padded = tr.validate()
    tr.val_episodes = [trimmed]
    v_trimmed = tr.validate()
    assert v_padded["val_mse"] == pytest.approx(v_trimmed["val_mse"], rel=1e-5)
    assert v_padded["val_nll"] == pytest.approx(v_trimmed["val_nll"], rel=1e-5)
