"""metrics.jsonl survives a kill mid-write; diverging losses warn; data meets the learner at one
boundary (device and dtype)."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import torch

from bayesmeta.devices import batch_to_learner, resolve_device, resolve_dtype
from bayesmeta.exceptions import BayesMetaError, ConfigError, InvalidValueError, NumericalError
from bayesmeta.inference import MAML, ProtoNet, StepOutput
from bayesmeta.inference.base import MetaLearner
from bayesmeta.models import MLP
from bayesmeta.runs import evaluate_run, train_run
from bayesmeta.tasks import Sinusoid, TaskBatch
from bayesmeta.training import DivergenceWarning, MetaTrainer, read_metrics

CONFIG = {
    "method": {"name": "maml"},
    "model": {"hidden": [8]},
    "tasks": {"name": "sinusoid", "k_shot": 4, "n_query": 4},
    "training": {"steps": 6, "meta_batch_size": 2, "val_episodes": 2, "val_every": 2, "checkpoint_every": 2,
                 "log_every": 1, "seed": 3},
    "evaluation": {"n_episodes": 3},
}


def _cfg(**training: object) -> dict:
    return {**CONFIG, "training": {**CONFIG["training"], **training}}


def test_partial_last_line_is_dropped_on_resume(tmp_path: Path) -> None:
    full = tmp_path / "full"
    train_run(_cfg(), full, progress=False)
    run = tmp_path / "killed"
    train_run(_cfg(steps=4), run, progress=False)
    log = run / "metrics.jsonl"
    # killed after step 5 was logged and during the write of step 6's line
    with open(log, "a") as f:
        f.write(json.dumps({"step": 5, "loss": 1.0}) + "\n")
        f.write('{"step": 6, "lo')
    with pytest.warns(RuntimeWarning, match="dropped 1 unreadable line"):
        train_run(_cfg(), run, progress=False)
    records, dropped = read_metrics(log)
    assert dropped == 0
    train_steps = [r["step"] for r in records if "loss" in r]
    assert train_steps == [1, 2, 3, 4, 5, 6]  # every step once
    assert log.read_bytes() == (full / "metrics.jsonl").read_bytes()  # and the very same numbers


def test_stale_log_without_checkpoint_is_cleared(tmp_path: Path) -> None:
    run = tmp_path / "r"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 9.0}\n{"step": 2, "lo')
    train_run(_cfg(steps=2), run, progress=False)
    records, dropped = read_metrics(run / "metrics.jsonl")
    assert dropped == 0 and [r["step"] for r in records if "loss" in r] == [1, 2]
    assert all(r.get("loss") != 9.0 for r in records)


class _Exploding(MetaLearner):
    """A loss that is constant, then grows 10x per step from ``start`` (a divergence)."""

    def __init__(self, start: int, base: float = 2.0, nan_at: int | None = None) -> None:
        super().__init__("regression")
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.calls, self.start, self.base, self.nan_at = 0, start, base, nan_at

    def meta_loss(self, batch: TaskBatch) -> StepOutput:
        self.calls += 1
        scale = self.base * 10.0 ** max(0, self.calls - self.start)
        if self.nan_at is not None and self.calls >= self.nan_at:
            scale = math.inf
        return StepOutput(self.w * 0 + scale)

    def adapt(self, support):  # type: ignore[no-untyped-def]  # pragma: no cover - unused
        raise NotImplementedError

    def predict(self, posterior, query_x):  # type: ignore[no-untyped-def]  # pragma: no cover - unused
        raise NotImplementedError


def _fit(learner: MetaLearner, steps: int) -> None:
    MetaTrainer(learner, Sinusoid(k_shot=2, n_query=2), steps=steps, meta_batch_size=1, progress=False).fit()


def test_a_loss_growing_by_orders_of_magnitude_warns_once() -> None:
    with pytest.warns(DivergenceWarning, match="diverging") as rec:
        _fit(_Exploding(start=10), steps=16)
    assert len([w for w in rec if issubclass(w.category, DivergenceWarning)]) == 1
    # the warning names the step: 2 * 10**4 > 1e3 * 2 first at call 14
    assert "at step 14" in str(next(w for w in rec if issubclass(w.category, DivergenceWarning)).message)


def test_a_stable_loss_does_not_warn_and_nonfinite_still_stops() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", DivergenceWarning)
        _fit(_Exploding(start=10_000), steps=30)
        _fit(_Exploding(start=12), steps=14)  # grew 100x only
    with pytest.raises(NumericalError):
        _fit(_Exploding(start=10_000, nan_at=8), steps=10)


# ------------------------------------------------------------------ devices and dtypes
def test_unavailable_devices_and_bad_dtypes_are_library_errors() -> None:
    batch = Sinusoid(k_shot=2, n_query=2).sample(2, torch.Generator().manual_seed(0))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="'cuda' is not available"):
            batch.to("cuda")
        with pytest.raises(ConfigError, match="cuda:3"):
            resolve_device("cuda:3")
    with pytest.raises(ConfigError, match="expected 'cpu', 'cuda', 'cuda:N' or 'mps'"):
        batch.to("tpu")
    with pytest.raises(ConfigError, match="float32, float64"):
        resolve_dtype("float16")
    assert batch.to(dtype=torch.float64).query_x.dtype == torch.float64
    assert resolve_device("cpu") == torch.device("cpu")


def test_float64_model_with_float32_data_is_a_clear_error_or_converted() -> None:
    torch.manual_seed(0)
    learner = MAML(MLP(1, 1, hidden=(8,)), inner_lr=0.1, task_kind="regression").double()
    batch = Sinusoid(k_shot=3, n_query=3).sample(2, torch.Generator().manual_seed(0))
    assert batch.support_x.dtype == torch.float32
    with pytest.raises(InvalidValueError, match=r"support: expected inputs on the learner's device and dtype \(cpu, float64\), got cpu, float32"):
        learner.adapt(batch.support)
    with pytest.raises(BayesMetaError):
        learner.meta_loss(batch)
    moved = batch_to_learner(batch, learner)  # the trainer's and evaluator's boundary
    assert moved.support_x.dtype == torch.float64 and moved.support_y.dtype == torch.float64
    assert torch.isfinite(learner.meta_loss(moved).loss)
    # classification labels keep their integer dtype
    proto = ProtoNet(MLP(4, None, hidden=(8,))).double()
    cls = TaskBatch(torch.randn(1, 4, 4), torch.tensor([[0, 1, 0, 1]]), torch.randn(1, 2, 4),
                    torch.tensor([[0, 1]]), n_way=2)
    assert batch_to_learner(cls, proto).support_y.dtype == torch.int64


def test_training_and_evaluation_in_float64(tmp_path: Path) -> None:
    train_run(_cfg(dtype="float64"), tmp_path / "r", progress=False)
    ckpt = torch.load(tmp_path / "r" / "checkpoints" / "last.pt", weights_only=True)
    assert all(v.dtype == torch.float64 for v in ckpt["learner"].values() if v.is_floating_point())
    res = evaluate_run(tmp_path / "r", progress=False)
    assert res.protocol["dtype"] == "float64" and all(torch.isfinite(v).all() for v in res.per_task.values())
    # the episode fingerprint does not depend on the dtype the model runs in
    res32 = evaluate_run(tmp_path / "r", progress=False, dtype="float32", out_dir=tmp_path / "e32")
    assert res32.episode_fingerprint == res.episode_fingerprint and res32.protocol["dtype"] == "float32"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA path: needs a GPU")
def test_batches_move_to_the_gpu_at_the_boundary() -> None:  # pragma: no cover - GPU only
    learner = MAML(MLP(1, 1, hidden=(8,)), inner_lr=0.1, task_kind="regression").to("cuda")
    batch = Sinusoid(k_shot=3, n_query=3).sample(2, torch.Generator().manual_seed(0))
    with pytest.raises(InvalidValueError, match="device"):
        learner.adapt(batch.support)
    moved = batch_to_learner(batch, learner)
    assert moved.support_x.device.type == "cuda"
    assert torch.isfinite(learner.meta_loss(moved).loss)
