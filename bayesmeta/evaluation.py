"""Evaluation on fixed episodes: per-task results, a summary with 95% CIs over tasks, files on disk.

``evaluate(learner, episodes)`` adapts to every episode's support set, predicts its query set and
computes every per-task metric of :func:`bayesmeta.metrics.task_metrics`. Results keep the task
as the unit: ``per_task[name]`` is ``[T]`` over all episodes' tasks, and the summary is a mean
with a seeded bootstrap interval over tasks (:func:`bayesmeta.metrics.mean_ci`).

On disk (``EvaluationResult.save``), a run's ``eval/`` folder holds ``summary.json``,
``per_task.jsonl`` (one line per task) and ``predictions.pt`` (plain tensors only, loadable with
``torch.load(weights_only=True)``), which ``bayesmeta report`` reads.

At scale: ``episodes`` may be any iterable (:func:`bayesmeta.tasks.iter_episodes` draws one
batch at a time), each batch is moved to the learner's device and dtype on entry, and only the
per-task metrics and the predictive tensors (``M*T*Q*C`` floats, on the CPU) are kept. Episodes
of different query sizes are padded to the largest with a ``query_mask`` (False on padding), so no
prediction is dropped. An *episode fingerprint* (SHA-256 over every task's tensors, see
:class:`EpisodeHasher`) is stored with the results: two runs are comparable task by task only
when their fingerprints agree. The progress bar leaves one summary line with the wall time.

Calibration (``calibrator=``, see :mod:`bayesmeta.calibration`): the calibrator is fitted on the
predictives of ``calibration_episodes`` (validation episodes, never the test episodes) and the
test episodes are scored raw and calibrated side by side: ``summary.json`` gains a ``calibrated``
section (the fitted calibrator and its metrics with CIs) and ``calibrated_per_task.jsonl`` holds
the calibrated per-task values. The raw results are identical with and without a calibrator.

Several processes (``distributed=``, ``torchrun ... bayesmeta evaluate``): every process walks
the episode stream, runs the learner on batches ``i`` with ``i % world_size == rank`` only, and
rank 0 gathers the per-task results back into episode order. Since the RNG is re-seeded before
every learner call and noise is drawn per task, the gathered results are identical to one
process's, whatever the number of processes.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from bayesmeta._validation import check_positive_int
from bayesmeta.calibration.apply import (
    Calibrator,
    calibrated_task_metrics,
    describe_calibrator,
    make_calibrator,
    stack_predictives,
)
from bayesmeta.devices import batch_to_learner
from bayesmeta.distributed.collectives import broadcast_object, gather_objects
from bayesmeta.distributed.context import DistContext
from bayesmeta.distributed.sharding import owns_episode
from bayesmeta.exceptions import BayesMetaError, CheckpointError, InvalidValueError
from bayesmeta.inference.base import MetaLearner
from bayesmeta.io import atomic_torch_save, atomic_write_text, safe_torch_load
from bayesmeta.metrics import MeanCI, mean_ci, task_metrics
from bayesmeta.predictive import CategoricalPredictive, GaussianPredictive, Predictive
from bayesmeta.tasks.batch import TaskBatch

__all__ = ["CalibratedResult", "EvaluationResult", "EpisodeHasher", "episode_fingerprint", "evaluate", "load_predictions", "read_predictions", "format_table"]

#: Metrics shown in the default results table, in order, when present.
HEADLINE = (
    "accuracy", "mse", "nll", "ece", "brier", "pit_error", "coverage_90", "crps",
    "conformal_coverage", "conformal_set_size", "conformal_empty_rate", "conformal_width",
)


@dataclass
class CalibratedResult:
    """Test metrics after a calibrator fitted on validation episodes.

    Attributes:
        calibrator: the fitted calibrator's description (``to_dict()``: name and fitted values).
        n_calibration_tasks: tasks of the calibration (validation) episodes.
        per_task: metric name -> ``[T]`` over the test tasks (scaling: every metric of
            :func:`~bayesmeta.metrics.task_metrics`; conformal: coverage, set size, empty-set rate
            or interval width).
        summary: metric name -> mean and 95% CI over tasks.
    """

    calibrator: dict
    n_calibration_tasks: int
    per_task: dict[str, torch.Tensor]
    summary: dict[str, MeanCI]


@dataclass
class EvaluationResult:
    """Per-task metrics over a fixed list of episodes and their summary.

    Attributes:
        method: a label for tables (the learner's class name or the config's method name).
        task_kind: ``"classification"`` or ``"regression"``.
        per_task: metric name -> ``[T]`` tensor, one value per task over all episodes.
        summary: metric name -> mean and 95% CI over tasks.
        predictions: plain tensors of the predictive and targets (see module docstring).
        episode_fingerprint: SHA-256 of the evaluated tasks (:class:`EpisodeHasher`); equal
            fingerprints mean the very same tasks in the same order.
        wall_seconds: wall-clock time of the evaluation loop.
        protocol: how the result was obtained (method options, model, tasks, steps trained,
            seeds, versions...), filled in by :func:`bayesmeta.runs.evaluate_run`; saved in
            ``summary.json`` for reports.
        calibrated: the calibrated side, when ``evaluate`` was given a calibrator.
    """

    method: str
    task_kind: str
    per_task: dict[str, torch.Tensor]
    summary: dict[str, MeanCI]
    predictions: dict[str, torch.Tensor] = field(default_factory=dict)
    episode_fingerprint: str = ""
    wall_seconds: float = 0.0
    protocol: dict[str, Any] = field(default_factory=dict)
    calibrated: CalibratedResult | None = None

    @property
    def n_tasks(self) -> int:
        """T, tasks evaluated."""
        return next(iter(self.per_task.values())).shape[0]

    def save(self, directory: str | Path) -> Path:
        """Write ``summary.json``, ``per_task.jsonl`` and ``predictions.pt`` into ``directory``.

        ``calibrated_per_task.jsonl`` is written with a calibrated result; without one (or without
        kept predictions) a ``calibrated_per_task.jsonl`` (``predictions.pt``) left in
        ``directory`` by an earlier evaluation is removed, so that no file there describes another
        evaluation than ``summary.json``. Every file is written atomically, ``summary.json`` last.
        """
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        summary = {
            "method": self.method,
            "task_kind": self.task_kind,
            "n_tasks": self.n_tasks,
            "episode_fingerprint": self.episode_fingerprint,
            "wall_seconds": round(self.wall_seconds, 3),
            "protocol": self.protocol,
            "metrics": {k: v.to_dict() for k, v in self.summary.items()},
        }
        atomic_write_text(_jsonl(self.per_task, self.n_tasks), d / "per_task.jsonl")
        if self.calibrated is not None:
            c = self.calibrated
            summary["calibrated"] = {
                "calibrator": c.calibrator,
                "n_calibration_tasks": c.n_calibration_tasks,
                "metrics": {k: v.to_dict() for k, v in c.summary.items()},
            }
            atomic_write_text(_jsonl(c.per_task, self.n_tasks), d / "calibrated_per_task.jsonl")
        else:
            (d / "calibrated_per_task.jsonl").unlink(missing_ok=True)
        if self.predictions:
            atomic_torch_save(self.predictions, d / "predictions.pt")
        else:
            (d / "predictions.pt").unlink(missing_ok=True)
        atomic_write_text(json.dumps(summary, indent=2, default=str), d / "summary.json")
        return d

    def table(self) -> str:
        """One-row results table (see :func:`format_table`)."""
        return format_table([self])


def _jsonl(per_task: dict[str, torch.Tensor], n_tasks: int) -> str:
    names = list(per_task)
    return "\n".join(json.dumps({n: float(per_task[n][i]) for n in names}) for i in range(n_tasks)) + "\n"


class EpisodeHasher:
    """Incremental SHA-256 over evaluation tasks, independent of how tasks are batched.

    Each task contributes its ``n_way``, then each of support x/y and query x/y restricted to its
    present points (padding ignored), as shape, dtype and raw bytes. So the fingerprint changes
    with any task, label, input value or order, and not with ``tasks_per_batch`` or padding.
    It is computed on the tensors as drawn (before any move to a device or dtype).
    """

    def __init__(self) -> None:
        self._h = hashlib.sha256(b"bayesmeta-episodes-v1")
        self.n_tasks = 0

    def _tensor(self, t: torch.Tensor) -> None:
        t = t.detach().cpu().contiguous()
        self._h.update(f"{list(t.shape)}{t.dtype}".encode())
        self._h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())

    def update(self, batch: TaskBatch) -> None:
        """Add every task of ``batch`` in order."""
        for t in range(batch.n_tasks):
            self._h.update(f"task n_way={batch.n_way}".encode())
            for x, y, m in (
                (batch.support_x, batch.support_y, batch.support_mask),
                (batch.query_x, batch.query_y, batch.query_mask),
            ):
                keep = m[t] if m is not None else slice(None)
                self._tensor(x[t][keep])
                self._tensor(y[t][keep])
            self.n_tasks += 1

    def hexdigest(self) -> str:
        """The fingerprint so far (64 hex digits)."""
        return self._h.hexdigest()


def episode_fingerprint(episodes: Iterable[TaskBatch]) -> str:
    """SHA-256 of a list of evaluation episodes (see :class:`EpisodeHasher`)."""
    h = EpisodeHasher()
    for b in episodes:
        h.update(b)
    return h.hexdigest()


class _PredictionBuffer:
    """Per-batch predictive tensors kept on the CPU in float32, joined once at the end.

    Batches may differ in query size Q: they are padded to the largest Q and a ``query_mask``
    (False on padding) is added, so every prediction is kept (reports and metrics honour masks).
    """

    def __init__(self) -> None:
        self.parts: dict[str, list[torch.Tensor]] = {}

    def add(self, pred: Predictive, batch: TaskBatch) -> None:
        out: dict[str, torch.Tensor] = {}
        if isinstance(pred, CategoricalPredictive):
            out["sample_log_probs"] = pred.sample_log_probs.detach().float().cpu()
        elif isinstance(pred, GaussianPredictive):
            out["sample_mean"] = pred.sample_mean.detach().float().cpu()
            out["sample_variance"] = pred.sample_variance.detach().float().cpu()
        y = batch.query_y.detach().cpu()
        out["targets"] = y.float() if y.is_floating_point() else y
        q = batch.query_x.shape[1]
        mask = batch.query_mask
        out["query_mask"] = (mask.cpu() if mask is not None else torch.ones(batch.n_tasks, q, dtype=torch.bool))
        for k, v in out.items():
            self.parts.setdefault(k, []).append(v)

    def result(self) -> dict[str, torch.Tensor]:
        if not self.parts:
            return {}
        q_max = max(m.shape[1] for m in self.parts["query_mask"])
        ragged = any(m.shape[1] != q_max for m in self.parts["query_mask"])
        out: dict[str, torch.Tensor] = {}
        for k, parts in self.parts.items():
            q_dim = 2 if k.startswith("sample_") else 1  # [M, T, Q, ...] or [T, Q, ...]
            t_dim = q_dim - 1
            padded = []
            for v in parts:
                pad = q_max - v.shape[q_dim]
                if pad:
                    shape = list(v.shape)
                    shape[q_dim] = pad
                    # padding: log-prob 0 / mean 0 / variance 1 / label 0 keep every metric finite;
                    # the mask (False there) keeps them out of every number.
                    fill = 1.0 if k == "sample_variance" else 0
                    v = torch.cat([v, torch.full(shape, fill, dtype=v.dtype)], dim=q_dim)
                padded.append(v)
            out[k] = torch.cat(padded, dim=t_dim)
            parts.clear()
        if not ragged and bool(out["query_mask"].all()):
            del out["query_mask"]  # no padding anywhere: files stay as small as before
        return out


@dataclass
class _EpisodeRecord:
    """What one evaluation batch gave: per-task metrics (raw and calibrated, per learner call)
    and the predictive tensors, tagged with the batch's index in the episode stream."""

    index: int
    per_task: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    calibrated: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    predictions: _PredictionBuffer = field(default_factory=_PredictionBuffer)


def _gather_records(ctx: DistContext, records: list[_EpisodeRecord]) -> list[_EpisodeRecord]:
    """Every process's records on rank 0, in stream order (an empty list elsewhere)."""
    parts = gather_objects(ctx, records, "gathering the evaluation results")
    if parts is None:
        return []
    return sorted((r for part in parts for r in part), key=lambda r: r.index)


def _merge_records(
    records: list[_EpisodeRecord],
) -> tuple[dict[str, list[torch.Tensor]], dict[str, list[torch.Tensor]], _PredictionBuffer]:
    """Concatenate records (already in stream order) into per-metric lists and one buffer."""
    per_task: dict[str, list[torch.Tensor]] = {}
    cal_task: dict[str, list[torch.Tensor]] = {}
    buffer = _PredictionBuffer()
    for rec in records:
        for src, dst in ((rec.per_task, per_task), (rec.calibrated, cal_task)):
            for k, v in src.items():
                dst.setdefault(k, []).extend(v)
        for k, v in rec.predictions.parts.items():
            buffer.parts.setdefault(k, []).extend(v)
    return per_task, cal_task, buffer


def _task_chunks(batch: TaskBatch, size: int | None) -> Iterator[TaskBatch]:
    """``batch`` split into consecutive groups of at most ``size`` tasks."""
    if size is None or batch.n_tasks <= size:
        yield batch
        return
    for start in range(0, batch.n_tasks, size):
        yield batch.index(slice(start, start + size))


def _fit_calibrator(
    learner: MetaLearner,
    calibrator: Calibrator | str,
    calibration_episodes: Sequence[TaskBatch] | None,
    episodes: Iterable[TaskBatch],
    kind: str | None,
    progress: bool,
    seed: int,
    max_tasks_per_call: int | None,
) -> tuple[Calibrator, int]:
    """Run the learner on the calibration episodes and fit the calibrator on their predictives."""
    if not calibration_episodes:
        raise InvalidValueError(
            "calibration_episodes: a calibrator needs validation episodes to be fitted on (never the test "
            "episodes), got none"
        )
    # identity check only on materialized test episodes: iterating a stream would consume it
    test_ids = {id(b) for b in episodes} if isinstance(episodes, Sequence) else set()
    if calibration_episodes is episodes or any(id(b) in test_ids for b in calibration_episodes):
        raise InvalidValueError(
            "calibration_episodes: expected validation episodes disjoint from the test episodes; fitting a "
            "calibrator on the test episodes overstates its calibration"
        )
    if kind is None:
        kind = "classification" if calibration_episodes[0].is_classification else "regression"
    cal = make_calibrator(calibrator, kind) if isinstance(calibrator, str) else calibrator
    preds, ys, ms = [], [], []
    for episode in tqdm(calibration_episodes, desc="calibrate", disable=not progress, leave=False):
        if episode.is_classification != (kind == "classification"):
            raise InvalidValueError(f"calibration_episodes: expected {kind} episodes like the test episodes")
        for batch in _task_chunks(episode, max_tasks_per_call):
            torch.manual_seed(seed)  # as for the test episodes (see evaluate)
            batch = batch_to_learner(batch, learner)
            preds.append(learner(batch))
            ys.append(batch.query_y)
            ms.append(batch.query_mask)
    pred, y, mask = stack_predictives(preds, ys, ms)
    return cal.fit(pred, y, mask), pred.batch_shape[0]


def evaluate(
    learner: MetaLearner,
    episodes: Iterable[TaskBatch],
    *,
    method: str | None = None,
    keep_predictions: bool = True,
    progress: bool = True,
    seed: int = 0,
    total: int | None = None,
    max_tasks_per_call: int | None = 4,
    calibrator: Calibrator | str | None = None,
    calibration_episodes: Sequence[TaskBatch] | None = None,
    distributed: DistContext | None = None,
) -> EvaluationResult:
    """Evaluate ``learner`` on fixed episodes.

    Args:
        learner: any :class:`~bayesmeta.inference.MetaLearner`; batches are moved to its device
            and dtype on entry.
        episodes: task batches, e.g. :func:`bayesmeta.tasks.fixed_episodes` (a list) or
            :func:`bayesmeta.tasks.iter_episodes` (drawn one batch at a time, so they are never
            all in memory); every method compared should get the very same tasks.
        method: label for tables; defaults to the learner's class name.
        keep_predictions: keep the predictive tensors for reports (memory: M*T*Q*C floats).
        progress: show a tqdm bar, and a one-line summary with the wall time when done.
        seed: seed of the bootstrap intervals and of any sampling inside ``predict`` (the global
            torch RNG state is restored afterwards). The RNG is re-seeded before every learner
            call and sampling learners draw per-task noise (DESIGN.md section 4), so a task's
            numbers do not depend on which episode or call it is evaluated in.
        total: number of batches for the progress bar when ``episodes`` has no ``len``.
        max_tasks_per_call: split each episode into calls of at most this many tasks (``None``:
            whole episodes). Peak memory is the activations of one call, so this bounds it; the
            per-task results do not depend on it (DESIGN.md section 4).
        calibrator: optional post-hoc calibrator, unfitted: an object of
            :mod:`bayesmeta.calibration` (``TemperatureScaling()``, ``VarianceScaling()``,
            ``SplitConformal(alpha=0.1)``) or a name, ``"temperature"`` or ``"conformal"``
            (see :func:`bayesmeta.calibration.make_calibrator`). It is fitted on
            ``calibration_episodes`` and the test metrics after it fill ``result.calibrated``.
        calibration_episodes: validation episodes to fit the calibrator on; required with a
            calibrator, and refused if they share a batch with ``episodes``.
        distributed: this process's place in a multi-process evaluation
            (:func:`bayesmeta.distributed.init_distributed`): every process passes the same
            episodes; each evaluates its share of the batches and rank 0 gathers them. Every
            process returns the same per-task metrics and summary; the predictive tensors are
            kept on rank 0 only (``predictions`` is empty elsewhere). Each process fits the
            calibrator itself, on all calibration episodes.

    Returns:
        :class:`EvaluationResult` over all tasks of all episodes, with the episode fingerprint
        and the wall time.

    Raises:
        InvalidValueError: no episodes.
    """
    if max_tasks_per_call is not None:
        check_positive_int("max_tasks_per_call", max_tasks_per_call)
    if isinstance(episodes, Sized) and len(episodes) == 0:
        raise InvalidValueError("episodes: expected at least one TaskBatch, got an empty sequence")
    was_training = learner.training
    learner.eval()
    if distributed is not None and distributed.world_size == 1:
        distributed = None
    main = distributed is None or distributed.is_main
    records: list[_EpisodeRecord] = []  # this process's episodes, in stream order
    fitted: Calibrator | None = None
    n_cal = 0
    hasher = EpisodeHasher()
    kind: str | None = None
    n_total = len(episodes) if isinstance(episodes, Sized) else total
    rng_state = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    torch.manual_seed(seed)
    start = time.perf_counter()
    bar = tqdm(episodes, total=n_total, desc="evaluate", unit="batch", disable=not (progress and main), leave=False)
    try:
        with torch.no_grad():
            if calibrator is not None:
                fitted, n_cal = _fit_calibrator(
                    learner, calibrator, calibration_episodes, episodes, kind, progress, seed, max_tasks_per_call
                )
            for index, episode in enumerate(bar):
                hasher.update(episode)
                if kind is None:
                    kind = "classification" if episode.is_classification else "regression"
                if not owns_episode(index, distributed):
                    continue  # another process evaluates this batch
                rec = _EpisodeRecord(index)
                for batch in _task_chunks(episode, max_tasks_per_call):
                    torch.manual_seed(seed)  # per call: a task's draws do not depend on its call
                    batch = batch_to_learner(batch, learner)
                    pred = learner(batch)
                    for k, v in task_metrics(pred, batch.query_y, batch.query_mask).items():
                        rec.per_task.setdefault(k, []).append(v.detach().double().cpu())
                    if fitted is not None:
                        for k, v in calibrated_task_metrics(fitted, pred, batch.query_y, batch.query_mask).items():
                            rec.calibrated.setdefault(k, []).append(v.detach().double().cpu())
                    if keep_predictions:
                        rec.predictions.add(pred, batch)
                    del pred, batch  # free the activations before the next forward pass
                records.append(rec)
    finally:
        bar.close()
        torch.set_rng_state(rng_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
        learner.train(was_training)
    if kind is None:
        raise InvalidValueError("episodes: expected at least one TaskBatch, got none")
    if distributed is not None:
        records = _gather_records(distributed, records)
    per_task, cal_task, buffer = _merge_records(records)
    wall = time.perf_counter() - start
    cat = {k: torch.cat(v) for k, v in per_task.items()}
    if distributed is not None:  # every process returns the same numbers; rank 0 keeps the predictions
        cat, cal_cat = broadcast_object(
            distributed, (cat, {k: torch.cat(v) for k, v in cal_task.items()}), "sharing the evaluation results"
        )
        cal_task = {k: [v] for k, v in cal_cat.items()}
    label = method or type(learner).__name__
    if progress and main:
        tqdm.write(
            f"evaluate: {label} on {hasher.n_tasks} tasks in {wall:.1f} s "
            f"({hasher.n_tasks / max(wall, 1e-9):.1f} tasks/s)",
            file=sys.stderr,
        )
    summary = {k: mean_ci(v, seed=seed) for k, v in cat.items() if bool(torch.isfinite(v).all())}
    calibrated = None
    if fitted is not None:
        ccat = {k: torch.cat(v) for k, v in cal_task.items()}
        csum = {k: mean_ci(v, seed=seed) for k, v in ccat.items() if bool(torch.isfinite(v).all())}
        calibrated = CalibratedResult(describe_calibrator(fitted), n_cal, ccat, csum)
    return EvaluationResult(label, kind, cat, summary, buffer.result(), hasher.hexdigest(), wall, calibrated=calibrated)


def read_predictions(path: str | Path, kind: str | None = None) -> tuple[Predictive, torch.Tensor, torch.Tensor | None]:
    """Read one ``predictions.pt`` file as ``(predictive, targets, query_mask)``.

    The one reader of the file :meth:`EvaluationResult.save` writes (``bayesmeta report`` uses it
    too). Loaded with ``weights_only=True``: plain tensors only, nothing unpickled.

    Args:
        path: the ``predictions.pt`` file.
        kind: ``"classification"`` or ``"regression"`` to insist on one; None accepts either.

    Returns:
        A :class:`CategoricalPredictive` (``sample_log_probs`` ``[S, T, Q, C]``) or a
        :class:`GaussianPredictive` (``sample_mean``/``sample_variance`` ``[S, T, Q, Dy]``), the
        targets ``[T, Q]`` / ``[T, Q, Dy]`` and the query mask ``[T, Q]`` (None if not stored).

    Raises:
        CheckpointError: the file is missing, truncated, not plain tensors, lacks the keys of
            ``kind``, or holds tensors no predictive accepts.
    """
    path = Path(path)
    data = safe_torch_load(path)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, got {type(data).__name__}")
    if kind is None:
        kind = "classification" if "sample_log_probs" in data else "regression" if "sample_mean" in data else None
        if kind is None:
            raise CheckpointError(f"{path}: holds neither classification nor regression predictions")
    need = ("sample_log_probs", "targets") if kind == "classification" else ("sample_mean", "sample_variance", "targets")
    missing = [k for k in need if k not in data]
    if missing:
        raise CheckpointError(f"{path}: expected keys {list(need)} for {kind}, missing {missing}")
    try:
        if kind == "classification":
            pred: Predictive = CategoricalPredictive(logits=data["sample_log_probs"])
        else:
            pred = GaussianPredictive(data["sample_mean"], data["sample_variance"])
    except BayesMetaError as e:
        raise CheckpointError(f"{path}: invalid predictions: {e}") from e
    return pred, data["targets"], data.get("query_mask")


def load_predictions(eval_dir: str | Path) -> tuple[Predictive, torch.Tensor, torch.Tensor | None]:
    """Read ``EVAL_DIR/predictions.pt`` back as ``(predictive, targets, query_mask)``.

    Raises:
        CheckpointError: see :func:`read_predictions`.
    """
    return read_predictions(Path(eval_dir) / "predictions.pt")


def format_table(results: Sequence[EvaluationResult], metrics: Sequence[str] = HEADLINE) -> str:
    """A plain-text table: one row per result, ``mean ± 95% half-width`` per metric.

    Accuracy is shown in percent. Metrics absent from every result are left out. A result with a
    calibrated side gets a second row, ``method + calibrator``.
    """
    entries = []
    for r in results:
        entries.append((r.method, r.n_tasks, r.summary))
        if r.calibrated is not None:
            entries.append((f"{r.method} + {r.calibrated.calibrator.get('name', 'calibrated')}", r.n_tasks, r.calibrated.summary))
    cols = [m for m in metrics if any(m in e[2] for e in entries)]
    header = ["method", "tasks"] + [f"{c} (%)" if c == "accuracy" else c for c in cols]
    rows = []
    for label, n_tasks, summ in entries:
        row = [label, str(n_tasks)]
        for c in cols:
            s = summ.get(c)
            row.append("—" if s is None else s.format(scale=100.0 if c == "accuracy" else 1.0, digits=2 if c == "accuracy" else 3))
        rows.append(row)
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]
    fmt = lambda r: "  ".join(x.ljust(w) for x, w in zip(r, widths))  # noqa: E731
    lines = [fmt(header), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows]
    lines.append("(mean ± half-width of the 95% bootstrap CI over tasks)")
    return "\n".join(lines)


