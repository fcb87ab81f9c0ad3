"""MetaTrainer: exact resume after a kill, atomic and safe checkpoints, config mismatch."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from bayesmeta.exceptions import CheckpointError, ConfigError, NumericalError
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


# ------------------------------------------------------------- resume with a sampling learner
def _np_trainer(run_dir: Path, steps: int = 12, callback=None) -> MetaTrainer:
    """NP draws its latent z from the global torch RNG in ``meta_loss``: an exact resume needs
    that RNG's state restored from the checkpoint, not only the task generator's."""
    from bayesmeta.inference.latent_np import NP

    torch.manual_seed(123)
    learner = NP(hidden=8, r_dim=8, z_dim=4, n_samples=2)
    return MetaTrainer(
        learner, Sinusoid(k_shot=5, n_query=5), steps=steps, meta_batch_size=3, lr=1e-3,
        seed=7, run_dir=run_dir, checkpoint_every=4, log_every=1, config=CONFIG,
        progress=False, callback=callback,
    )


def test_sampling_learner_killed_and_resumed_reproduces_the_run_bitwise(tmp_path: Path) -> None:
    full = _np_trainer(tmp_path / "a")
    full.fit()

    def kill_at_6(step: int, _out) -> None:
        if step == 6:
            # draw from the global RNG as any other code in the process might: a resume must not
            # depend on what happened to the global RNG between the checkpoint and the kill
            torch.randn(100)
            raise Killed

    with pytest.raises(Killed):
        _np_trainer(tmp_path / "b", callback=kill_at_6).fit()
    assert load_checkpoint(tmp_path / "b")["step"] == 4
    torch.manual_seed(999)  # a fresh process: the global RNG is anywhere
    resumed = _np_trainer(tmp_path / "b")
    resumed.fit()
    a, b = _losses(tmp_path / "a"), _losses(tmp_path / "b")
    assert [s for s, _ in b] == list(range(1, 13))
    assert a == b  # bitwise, including the z samples drawn after the resume
    for (name, pa), pb in zip(full.learner.state_dict().items(), resumed.learner.state_dict().values()):
        assert torch.equal(pa, pb), name


def test_best_checkpoint_is_overwritten_only_when_validation_improves(tmp_path: Path) -> None:
    """Validation scores are made to go 0.5, 0.7, 0.6, 0.9, 0.8 (accuracy, higher is better):
    best.pt must be written at steps 2, 4 and 8 only and finally hold step 8."""
    scores = iter([0.5, 0.7, 0.6, 0.9, 0.8])
    tr = _trainer(tmp_path, steps=10)
    tr.val_episodes = []  # not used: validate is replaced below
    tr.val_every = 2
    tr.validate = lambda: {"val_accuracy": next(scores)}  # type: ignore[method-assign]
    writes: list[int] = []
    import bayesmeta.training as training

    real_save = training.save_checkpoint

    def spy(path, state):
        if Path(path).name == "best.pt":
            writes.append(state["step"])
        real_save(path, state)

    training.save_checkpoint = spy
    try:
        res = tr.fit()
    finally:
        training.save_checkpoint = real_save
    assert writes == [2, 4, 8]
    assert res.best_step == 8 and res.best_val == 0.9
    assert load_checkpoint(tmp_path / "checkpoints" / "best.pt")["step"] == 8
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["best_step"] == 8


def test_validation_best_step_is_the_step_of_the_lowest_validation_mse(tmp_path: Path) -> None:
    """With real validation: best_step is the argmin of the logged val_mse, and best.pt holds it."""
    from bayesmeta.tasks import fixed_episodes

    tr = _trainer(tmp_path, steps=12)
    tr.val_episodes = fixed_episodes(Sinusoid(k_shot=5, n_query=5), 2, seed=1, tasks_per_batch=4)
    tr.val_every = 3
    res = tr.fit()
    vals = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    val_mse = {v["step"]: v["val_mse"] for v in vals if "val_mse" in v}
    assert sorted(val_mse) == [3, 6, 9, 12]
    best = min(val_mse, key=lambda s: (val_mse[s], s))  # first of equal minima: strict improvement
    assert res.best_step == best and res.best_val == -val_mse[best]
    assert load_checkpoint(tmp_path / "checkpoints" / "best.pt")["step"] == best


def test_grad_clip_bounds_the_update_norm(tmp_path: Path) -> None:
    """The gradient the optimizer sees (left in ``.grad`` after the step) has global norm exactly
    ``grad_clip`` when the raw gradient is larger, and is untouched with ``grad_clip=None``."""
    norms: dict[float | None, float] = {}
    for clip in (None, 1e-3):
        torch.manual_seed(123)
        learner = MAML(MLP(1, 1, hidden=(16, 16)), inner_lr=0.01, task_kind="regression")
        tr = MetaTrainer(learner, Sinusoid(k_shot=5, n_query=5), steps=1, meta_batch_size=4, seed=7,
                         grad_clip=clip, progress=False)
        tr.fit()
        norms[clip] = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in learner.parameters()])))
    assert norms[None] > 1e-2  # the unclipped gradient is much larger than the clip...
    assert norms[1e-3] == pytest.approx(1e-3, rel=1e-5)  # ...and is scaled to norm grad_clip exactly
    with pytest.raises(ConfigError, match="grad_clip"):
        MetaTrainer(MAML(MLP(1, 1), task_kind="regression"), Sinusoid(), steps=1, grad_clip=0.0)


def test_max_minutes_stops_early_with_a_checkpoint_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake clock that advances 1 s per reading: the deadline is read at t=0 (3.5 s budget) and
    the clock once per step, so step 4 (read at t=4) is the first past the deadline: it is
    completed, checkpointed, and the run stops; a later call continues to ``steps``."""
    import bayesmeta.training as training

    clock = iter(range(0, 10_000))
    monkeypatch.setattr(training.time, "monotonic", lambda: float(next(clock)))
    tr = _trainer(tmp_path, steps=20)
    tr.max_minutes = 3.5 / 60
    res = tr.fit()
    assert res.steps == 4
    assert load_checkpoint(tmp_path)["step"] == res.steps  # checkpointed where it stopped
    monkeypatch.undo()
    assert _trainer(tmp_path, steps=20).fit().steps == 20
    with pytest.raises(ConfigError, match="max_minutes"):
        MetaTrainer(MAML(MLP(1, 1), task_kind="regression"), Sinusoid(), steps=1, max_minutes=0)
