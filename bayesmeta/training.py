"""``MetaTrainer``: the meta-training loop, checkpoints, resume, logging and progress.

A run directory (DESIGN.md section 6) holds::

    config.yaml          the resolved config (written by the CLI)
    checkpoints/last.pt  the latest checkpoint (atomic write), every ``checkpoint_every`` steps
    checkpoints/best.pt  the checkpoint with the best validation score
    metrics.jsonl        one JSON line per logged training step or validation

Reproducibility: task batches come from the trainer's own ``torch.Generator`` and any sampling
inside a learner from the global torch RNG (and the CUDA generators when the learner is on a
GPU), seeded once at the start; all generator states are saved in every checkpoint, so a run
killed after a checkpoint and resumed follows the same loss trajectory as an uninterrupted run
(on the same machine and thread count). The learner's initial weights are seeded by whoever
builds it (:func:`bayesmeta.runs.init_learner` uses ``training.seed``).

Devices: the trainer moves every task batch to the learner's device and dtype
(:func:`bayesmeta.devices.batch_to_learner`); the learner itself is placed by its builder.

Several processes (``torchrun``, :mod:`bayesmeta.distributed`): with ``distributed=`` every
process draws the whole meta-batch from the same generator, keeps its block of tasks by global
index, and the task-weighted gradients are summed by an all-reduce before the identical
optimizer step on every process, so the trajectory does not depend on the number of processes.
Rank 0 alone writes checkpoints, logs and the progress bar; validation runs on rank 0.

Logs: ``metrics.jsonl`` is appended one line per record. On resume the lines after the
checkpoint's step are dropped, and so is a line cut short by a kill during a write, so the run
continues without a parse error and no step is logged twice. A loss that grows by orders of
magnitude over its early median raises a :class:`DivergenceWarning` before it overflows.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from bayesmeta._validation import check_positive_int
from bayesmeta.devices import batch_to_learner, learner_device_dtype
from bayesmeta.distributed.collectives import broadcast_rng, mark_shared, reduce_step, run_on_main
from bayesmeta.distributed.context import DistContext
from bayesmeta.distributed.sharding import check_meta_batch_size, shard_batch
from bayesmeta.exceptions import CheckpointError, ConfigError, InvalidValueError, NumericalError
from bayesmeta.inference.base import MetaLearner, StepOutput
from bayesmeta.io import atomic_torch_save, atomic_write_text, safe_torch_load
from bayesmeta.metrics import accuracy, mse, nll
from bayesmeta.tasks.batch import TaskBatch
from bayesmeta.tasks.episodes import TaskSource

__all__ = [
    "MetaTrainer",
    "TrainResult",
    "DivergenceWarning",
    "load_checkpoint",
    "save_checkpoint",
    "config_fingerprint",
    "read_metrics",
    "ShardRandomnessWarning",
]

CHECKPOINT_FORMAT = "bayesmeta-checkpoint-v1"
#: Training options that may change between a checkpoint and its resumption.
_RESUMABLE_KEYS = ("steps", "log_every", "val_every", "checkpoint_every", "progress", "max_minutes", "device")
#: Options added after runs were first written: left out of the fingerprint at their default, so
#: older run directories still resume.
_NEW_DEFAULTS = {"dtype": "float32"}
#: Steps whose losses form the early baseline of the divergence check.
_EARLY_STEPS = 20


class DivergenceWarning(UserWarning):
    """The training loss grew by orders of magnitude over its early median (not yet NaN/Inf)."""


class ShardRandomnessWarning(UserWarning):
    """In a multi-process run, the learner drew random numbers that depend on how many tasks a
    process holds: its trajectory depends on the number of processes (see docs/distributed.md)."""


def read_metrics(path: str | Path, *, max_step: int | None = None) -> tuple[list[dict[str, Any]], int]:
    """Read a ``metrics.jsonl`` log, skipping lines that do not parse (a write cut short).

    Args:
        path: the log file (a missing file reads as empty).
        max_step: keep only records with ``step <= max_step``.

    Returns:
        ``(records, n_dropped)``: the parsed records, and how many lines did not parse.
    """
    p = Path(path)
    if not p.exists():
        return [], 0
    records, dropped = [], 0
    for line in p.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            dropped += 1
            continue
        if not isinstance(rec, dict):
            dropped += 1
            continue
        if max_step is None or int(rec.get("step", 0)) <= max_step:
            records.append(rec)
    return records, dropped


def config_fingerprint(config: dict[str, Any] | None) -> str:
    """SHA-256 of what determines a training run: the config less its ``evaluation`` section and
    the training options that may change on resume (``steps``, logging intervals...)."""
    if not config:
        return ""
    cfg = json.loads(json.dumps(config, sort_keys=True, default=str))
    cfg.pop("evaluation", None)
    training = cfg.get("training", {})
    for k in _RESUMABLE_KEYS:
        training.pop(k, None)
    for k, default in _NEW_DEFAULTS.items():
        if training.get(k) == default:
            training.pop(k)
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write a checkpoint atomically; ``state`` must hold only tensors and plain containers."""
    atomic_torch_save({"format": CHECKPOINT_FORMAT, **state}, path)


def load_checkpoint(path: str | Path, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``) and check it.

    Args:
        path: a ``.pt`` file, or a run directory (then ``checkpoints/last.pt`` inside it).
        config: if given, the checkpoint must come from a config with the same fingerprint.

    Returns:
        The checkpoint dict: ``step``, ``learner`` (state dict), ``optimizer``, ``rng``...

    Raises:
        CheckpointError: missing, truncated, not a bayesmeta checkpoint, holding pickled objects,
            or from a different config.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "checkpoints" / "last.pt"
    ckpt = safe_torch_load(p)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{p}: expected a {CHECKPOINT_FORMAT} checkpoint, got something else")
    if config is not None:
        want, got = config_fingerprint(config), ckpt.get("config_fingerprint", "")
        if want != got:
            raise CheckpointError(
                f"{p}: this checkpoint was written by a different config (fingerprint {got[:12]} "
                f"vs {want[:12]} for the given config); method, model, tasks and training options "
                f"other than {', '.join(_RESUMABLE_KEYS)} must match"
            )
    return ckpt


@dataclass
class TrainResult:
    """What :meth:`MetaTrainer.fit` returns.

    Attributes:
        steps: the last completed step.
        history: the logged training records (dicts as in metrics.jsonl), this call only.
        best_val: best validation score (higher is better: accuracy, or minus the MSE).
        best_step: step of ``best_val``.
        resumed_from: the checkpoint step this call started from (0 for a fresh run).
        target_steps: the steps asked for; above ``steps`` when a time budget stopped the call.
    """

    steps: int
    history: list[dict[str, float]] = field(default_factory=list)
    best_val: float | None = None
    best_step: int | None = None
    resumed_from: int = 0
    target_steps: int = 0


class MetaTrainer:
    """Meta-trains a learner with Adam on batches from a task source.

    Args:
        learner: the :class:`~bayesmeta.inference.MetaLearner`.
        source: a task source (``.sample(n, generator) -> TaskBatch``).
        steps: total meta-steps (a resumed run continues up to this).
        meta_batch_size: tasks per meta-step.
        lr: Adam learning rate (the initial one when ``lr_decay_every`` is set).
        lr_decay_every: multiply the learning rate by ``lr_decay`` every this many steps (a step
            schedule, as Prototypical Networks halve it every 2000 episodes); ``None``: constant.
        lr_decay: the factor of ``lr_decay_every``, in (0, 1].
        grad_clip: max global gradient norm (``None``: no clipping).
        seed: seeds the task generator and the global torch RNG at the start of a fresh run.
        val_episodes: fixed episodes for validation (``None``: no validation).
        val_every: steps between validations.
        run_dir: where checkpoints and metrics.jsonl go (``None``: keep nothing on disk).
        checkpoint_every: steps between checkpoints.
        log_every: steps between metrics.jsonl lines.
        config: the resolved config; its fingerprint is stored to refuse mismatched resumes.
        progress: show a tqdm bar.
        callback: ``callback(step, output)`` after every step (for tests and custom logging).
        max_minutes: wall-clock budget of this call; when it runs out the trainer validates,
            checkpoints and stops early (``TrainResult.steps`` says where). ``None``: no limit.
        max_cpu_seconds: CPU-time budget of this call (``time.process_time``: this process's
            user + system time, all threads), handled like ``max_minutes``; what
            ``bayesmeta benchmark`` gives every method. ``None``: no limit.
        divergence_factor: warn (:class:`DivergenceWarning`, once per call) when ``|loss|``
            exceeds this multiple of the median ``|loss|`` of the first steps; ``None``: never.
        distributed: this process's place in a multi-process run
            (:func:`bayesmeta.distributed.init_distributed`); ``None``: one process. Every
            process must build the same learner (same seed) and trainer.

    Raises:
        ConfigError: an option out of range, or (in :meth:`fit`) ``steps`` below the step of the
            checkpoint being resumed.
    """

    def __init__(
        self,
        learner: MetaLearner,
        source: TaskSource,
        *,
        steps: int,
        meta_batch_size: int = 16,
        lr: float = 1e-3,
        grad_clip: float | None = 10.0,
        seed: int = 0,
        val_episodes: Sequence[TaskBatch] | None = None,
        val_every: int = 250,
        run_dir: str | Path | None = None,
        checkpoint_every: int = 250,
        log_every: int = 10,
        config: dict[str, Any] | None = None,
        progress: bool = True,
        callback: Callable[[int, StepOutput], None] | None = None,
        max_minutes: float | None = None,
        divergence_factor: float | None = 1e3,
        distributed: DistContext | None = None,
        max_cpu_seconds: float | None = None,
        lr_decay_every: int | None = None,
        lr_decay: float = 0.5,
    ) -> None:
        self.learner = learner
        self.source = source
        self.steps = check_positive_int("steps", steps, minimum=0)
        self.meta_batch_size = check_positive_int("meta_batch_size", meta_batch_size)
        if not (lr > 0 and math.isfinite(lr)):
            raise ConfigError(f"lr: expected a positive finite learning rate, got {lr!r}")
        self.lr = float(lr)
        if lr_decay_every is not None:
            check_positive_int("lr_decay_every", lr_decay_every)
        self.lr_decay_every = lr_decay_every
        if isinstance(lr_decay, bool) or not (isinstance(lr_decay, int | float) and 0 < lr_decay <= 1):
            raise ConfigError(f"lr_decay: expected a factor in (0, 1], got {lr_decay!r}")
        self.lr_decay = float(lr_decay)
        if grad_clip is not None and not grad_clip > 0:
            raise ConfigError(f"grad_clip: expected a positive float or None, got {grad_clip!r}")
        self.grad_clip = grad_clip
        self.seed = int(seed)
        self.val_episodes = list(val_episodes) if val_episodes is not None else None
        self.val_every = check_positive_int("val_every", val_every)
        self.checkpoint_every = check_positive_int("checkpoint_every", checkpoint_every)
        self.log_every = check_positive_int("log_every", log_every)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.config = config
        self.progress = progress
        self.callback = callback
        if max_minutes is not None and not max_minutes > 0:
            raise ConfigError(f"max_minutes: expected a positive number or None, got {max_minutes!r}")
        self.max_minutes = max_minutes
        if max_cpu_seconds is not None and not max_cpu_seconds > 0:
            raise ConfigError(f"max_cpu_seconds: expected a positive number or None, got {max_cpu_seconds!r}")
        self.max_cpu_seconds = max_cpu_seconds
        if divergence_factor is not None and not divergence_factor > 1:
            raise ConfigError(f"divergence_factor: expected a number > 1 or None, got {divergence_factor!r}")
        self.divergence_factor = divergence_factor
        self.distributed = distributed if distributed is not None and distributed.world_size > 1 else None
        if self.distributed is not None:
            try:
                check_meta_batch_size(self.meta_batch_size, self.distributed.world_size)
            except ConfigError as e:
                raise mark_shared(e, self.distributed) from None
        self._early_losses: list[float] = []
        self.optimizer = torch.optim.Adam(learner.parameters(), lr=lr)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.step = 0
        self.best_val: float | None = None
        self.best_step: int | None = None

    # ------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: weights, optimizer, both RNG states, counters."""
        return {
            "step": self.step,
            "learner": self.learner.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": self._rng_state(),
            "early_losses": list(self._early_losses),
            "best_val": self.best_val,
            "best_step": self.best_step,
            "config_fingerprint": config_fingerprint(self.config),
        }

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        """Restore from a checkpoint dict (see :func:`load_checkpoint`)."""
        try:
            self.learner.load_state_dict(ckpt["learner"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.generator.set_state(ckpt["rng"]["tasks"])
            torch.set_rng_state(ckpt["rng"]["torch"])
            cuda_states = ckpt["rng"].get("cuda")
            if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(cuda_states)
            self.step = int(ckpt["step"])
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"checkpoint does not fit this learner/optimizer: {e}") from None
        self.best_val = ckpt.get("best_val")
        self.best_step = ckpt.get("best_step")
        self._early_losses = [float(v) for v in ckpt.get("early_losses", [])]

    @property
    def is_main(self) -> bool:
        """True in a single process and on rank 0: the process that writes files and shows progress."""
        return self.distributed is None or self.distributed.is_main

    def _on_main(self, fn: Callable[[], Any], what: str) -> Any:
        """``fn()`` here in one process; on rank 0 only, result and errors shared, in several."""
        return fn() if self.distributed is None else run_on_main(self.distributed, fn, what)

    def _uses_cuda(self) -> bool:
        return learner_device_dtype(self.learner)[0].type == "cuda"

    def _rng_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"tasks": self.generator.get_state(), "torch": torch.get_rng_state()}
        if self._uses_cuda():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def _checkpoint_path(self, name: str) -> Path:
        assert self.run_dir is not None
        return self.run_dir / "checkpoints" / name

    def _log(self, record: dict[str, float]) -> None:
        if self.run_dir is None or not self.is_main:
            return
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def _truncate_log(self, step: int) -> None:
        """Drop metrics.jsonl lines logged after the checkpoint being resumed (a killed run's
        tail), and any line that does not parse (a write cut short by the kill)."""
        assert self.run_dir is not None
        path = self.run_dir / "metrics.jsonl"
        if not path.exists():
            return
        keep, dropped = read_metrics(path, max_step=step)
        if dropped:
            warnings.warn(
                f"{path}: dropped {dropped} unreadable line(s) (a write cut short); resuming from step {step}",
                RuntimeWarning,
                stacklevel=5,  # _read_resume_checkpoint <- _on_main <- fit <- the caller
            )
        atomic_write_text("".join(json.dumps(r) + "\n" for r in keep), path)

    def _check_divergence(self, loss: float) -> None:
        """Warn once if ``|loss|`` exceeds ``divergence_factor`` x the early median ``|loss|``."""
        if self.divergence_factor is None or self._warned_divergence:
            return
        if len(self._early_losses) < _EARLY_STEPS:
            self._early_losses.append(abs(loss))
        if len(self._early_losses) < 5:  # a median of fewer steps is too noisy to compare with
            return
        base = statistics.median(self._early_losses)
        if abs(loss) > self.divergence_factor * max(base, 1e-12):
            self._warned_divergence = True
            if not self.is_main:  # every process tracks the same losses; one reports
                return
            warnings.warn(
                f"loss: |loss| = {abs(loss):.3g} at step {self.step} is more than {self.divergence_factor:g} x "
                f"its early median {base:.3g}; training is diverging (lower training.lr or the inner "
                f"learning rate, or lower training.grad_clip)",
                DivergenceWarning,
                stacklevel=3,
            )

    # -------------------------------------------------------------- loop
    def validate(self) -> dict[str, float]:
        """Mean over validation tasks of ``val_accuracy`` or ``val_mse``, and ``val_nll``.

        Uses :mod:`bayesmeta.metrics` per task, so padded (masked) query points do not count.
        """
        assert self.val_episodes is not None
        was_training = self.learner.training
        self.learner.eval()
        per_task: dict[str, list[torch.Tensor]] = {}
        try:
            with torch.no_grad():
                for batch in self.val_episodes:
                    batch = batch_to_learner(batch, self.learner)
                    pred = self.learner(batch)
                    y, m = batch.query_y, batch.query_mask
                    main = ("val_accuracy", accuracy) if batch.is_classification else ("val_mse", mse)
                    for key, fn in (main, ("val_nll", nll)):
                        per_task.setdefault(key, []).append(fn(pred, y, m))  # type: ignore[arg-type]
        finally:
            self.learner.train(was_training)
        return {k: float(torch.cat(v).mean()) for k, v in per_task.items()}

    def fit(self) -> TrainResult:
        """Train up to ``steps``, resuming from ``run_dir/checkpoints/last.pt`` if it exists.

        Raises:
            CheckpointError: the run directory's checkpoint is unreadable or from another config.
            ConfigError: ``steps`` is below the checkpoint's step (a run cannot be un-trained).
            NumericalError: the loss became NaN/Inf (the last checkpoint is left intact).
        """
        self._warned_divergence = False
        self._warned_rng = False
        if self.run_dir is not None:
            ckpt = self._on_main(self._read_resume_checkpoint, "reading the checkpoint to resume from")
            if ckpt is not None:
                self.load_state_dict(ckpt)
                if self.distributed is not None:
                    broadcast_rng(self.distributed, "sharing the resumed RNG state")
        if self.step == 0:
            torch.manual_seed(self.seed)
            self.generator.manual_seed(self.seed)
        result = TrainResult(
            self.step, best_val=self.best_val, best_step=self.best_step, resumed_from=self.step, target_steps=self.steps
        )
        self.learner.train()
        bar = tqdm(total=self.steps, initial=self.step, desc="meta-train", disable=not (self.progress and self.is_main))
        deadline = None if self.max_minutes is None else time.monotonic() + 60.0 * self.max_minutes
        cpu_deadline = None if self.max_cpu_seconds is None else time.process_time() + self.max_cpu_seconds
        try:
            while self.step < self.steps:
                out_of_time = (deadline is not None and time.monotonic() > deadline) or (
                    cpu_deadline is not None and time.process_time() > cpu_deadline
                )
                # every process draws the whole meta-batch (same generator state) and keeps its block
                full = self.source.sample(self.meta_batch_size, generator=self.generator)
                try:
                    shard, weight = shard_batch(full, self.distributed)
                except InvalidValueError as e:  # the same batch, refused alike on every process
                    raise mark_shared(e, self.distributed) from None
                batch = batch_to_learner(shard, self.learner)
                self.optimizer.zero_grad(set_to_none=True)
                out = self.learner.meta_loss(batch)
                loss_value, metrics, rng_in_sync = float(out.loss.detach()), out.metrics, True
                if self.distributed is not None:
                    # one all-reduce: weighted gradients, loss, metrics, the deadline and the RNG check
                    out.loss.backward()
                    sums = reduce_step(
                        self.distributed, self.learner.parameters(), weight, out.loss, out.metrics, out_of_time,
                        self.step + 1,
                    )
                    loss_value, metrics, out_of_time, rng_in_sync = sums.loss, sums.metrics, sums.flag, sums.rng_in_sync
                    out = StepOutput(torch.tensor(loss_value), metrics)
                if not math.isfinite(loss_value):
                    raise mark_shared(NumericalError(
                        f"loss: became {loss_value} at step {self.step + 1}; lower lr or inner_lr, "
                        f"or resume from the last checkpoint"
                    ), self.distributed)
                if self.distributed is None:
                    out.loss.backward()
                if self.grad_clip is not None:
                    # learners made of independent parts (Ensemble) clip each part on its own
                    groups = getattr(self.learner, "grad_clip_groups", None)
                    for params in groups() if groups is not None else [self.learner.parameters()]:
                        torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
                self._set_lr()
                self.optimizer.step()
                self.step += 1
                if not rng_in_sync:
                    self._resync_rng()
                record = {"step": self.step, "loss": loss_value, **metrics}
                self._check_divergence(record["loss"])
                if self.step % self.log_every == 0 or self.step == self.steps:
                    result.history.append(record)
                    self._log(record)
                    bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k != "step"}, refresh=False)
                last = self.step == self.steps or out_of_time
                if self.val_episodes is not None and (self.step % self.val_every == 0 or last):
                    self._validate_and_keep_best()
                if self.run_dir is not None and self.is_main and (self.step % self.checkpoint_every == 0 or last):
                    save_checkpoint(self._checkpoint_path("last.pt"), self.state_dict())
                bar.update(1)
                if self.callback is not None:
                    self.callback(self.step, out)
                if out_of_time:
                    break
        finally:
            bar.close()
        result.steps = self.step
        result.best_val, result.best_step = self.best_val, self.best_step
        return result

    def lr_at(self, step: int) -> float:
        """The learning rate of the step that follows ``step`` completed steps."""
        if self.lr_decay_every is None:
            return self.lr
        return self.lr * self.lr_decay ** (step // self.lr_decay_every)

    def _set_lr(self) -> None:
        # a function of the step count alone (no scheduler state): a resumed run, whatever the
        # optimizer state it loaded, and every process of a distributed run use the same rate
        lr = self.lr_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def _read_resume_checkpoint(self) -> dict[str, Any] | None:
        """Create the run directory; the checkpoint to resume from (``None``: a fresh run), with
        the log cut back to its step."""
        assert self.run_dir is not None
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise ConfigError(f"run_dir: expected a directory, got the file {str(self.run_dir)!r}")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        last = self._checkpoint_path("last.pt")
        ckpt = load_checkpoint(last, self.config) if last.exists() else None
        step = 0 if ckpt is None else int(ckpt.get("step", 0))
        if step > self.steps:
            raise ConfigError(
                f"steps: {self.steps} is below the step of the checkpoint in {str(self.run_dir)!r} "
                f"({step}); nothing to train. Give steps > {step} to train further, "
                f"or a new run directory"
            )
        self._truncate_log(step)
        return ckpt

    def _resync_rng(self) -> None:
        """Multi-process: the global RNG must be in the same state on every process after a step
        (learners draw per-task noise from one shared draw). A learner that drew by task count
        desynchronized it: warn once, and give every process rank 0's state."""
        assert self.distributed is not None
        if self.is_main and not self._warned_rng:
            warnings.warn(
                f"{type(self.learner).__name__}: its meta-loss drew random numbers that depend on how many tasks a "
                f"process holds (at step {self.step}); with {self.distributed.world_size} processes its trajectory "
                f"differs from a one-process run (each process now continues from rank 0's RNG state; "
                f"see docs/distributed.md)",
                ShardRandomnessWarning,
                stacklevel=3,
            )
        self._warned_rng = True
        broadcast_rng(self.distributed, f"re-synchronizing the RNG at step {self.step}")

    def _validate_and_keep_best(self) -> None:
        val = self._on_main(self._validate_and_log, f"validation at step {self.step}")
        if self.distributed is not None:
            # validation drew from rank 0's RNG only: every process continues from its state
            broadcast_rng(self.distributed, f"sharing the RNG after validation at step {self.step}")
        score = val["val_accuracy"] if "val_accuracy" in val else -val["val_mse"]
        if self.best_val is None or score > self.best_val:
            self.best_val, self.best_step = score, self.step
            if self.run_dir is not None and self.is_main:
                save_checkpoint(self._checkpoint_path("best.pt"), self.state_dict())

    def _validate_and_log(self) -> dict[str, float]:
        val = self.validate()
        self._log({"step": self.step, **val})
        return val
