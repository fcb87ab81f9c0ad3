"""Evaluation on fixed episodes: per-task results, a summary with 95% CIs over tasks, files on disk.

``evaluate(learner, episodes)`` adapts to every episode's support set, predicts its query set and
computes every per-task metric of :func:`bayesmeta.metrics.task_metrics`. Results keep the task
as the unit: ``per_task[name]`` is ``[T]`` over all episodes' tasks, and the summary is a mean
with a seeded bootstrap interval over tasks (:func:`bayesmeta.metrics.mean_ci`).

On disk (``EvaluationResult.save``), a run's ``eval/`` folder holds ``summary.json``,
``per_task.jsonl`` (one line per task) and ``predictions.pt`` (plain tensors only, loadable with
``torch.load(weights_only=True)``), which ``bayesmeta report`` reads.

Calibration (``calibrator=``, see :mod:`bayesmeta.calibration`): the calibrator is fitted on the
predictives of ``calibration_episodes`` (validation episodes, never the test episodes) and the
test episodes are scored raw and calibrated side by side: ``summary.json`` gains a ``calibrated``
section (the fitted calibrator and its metrics with CIs) and ``calibrated_per_task.jsonl`` holds
the calibrated per-task values. The raw results are identical with and without a calibrator.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from bayesmeta.calibration.apply import (
    Calibrator,
    calibrated_task_metrics,
    describe_calibrator,
    make_calibrator,
    stack_predictives,
)
from bayesmeta.exceptions import CheckpointError, InvalidValueError
from bayesmeta.inference.base import MetaLearner
from bayesmeta.io import atomic_torch_save, safe_torch_load
from bayesmeta.metrics import MeanCI, mean_ci, task_metrics
from bayesmeta.predictive import CategoricalPredictive, GaussianPredictive, Predictive
from bayesmeta.tasks.batch import TaskBatch

__all__ = ["CalibratedResult", "EvaluationResult", "evaluate", "load_predictions", "format_table"]

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
        calibrated: the calibrated side, when ``evaluate`` was given a calibrator.
    """

    method: str
    task_kind: str
    per_task: dict[str, torch.Tensor]
    summary: dict[str, MeanCI]
    predictions: dict[str, torch.Tensor] = field(default_factory=dict)
    calibrated: CalibratedResult | None = None

    @property
    def n_tasks(self) -> int:
        """T, tasks evaluated."""
        return next(iter(self.per_task.values())).shape[0]

    def save(self, directory: str | Path) -> Path:
        """Write ``summary.json``, ``per_task.jsonl`` and ``predictions.pt`` into ``directory``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        summary = {
            "method": self.method,
            "task_kind": self.task_kind,
            "n_tasks": self.n_tasks,
            "metrics": {k: v.to_dict() for k, v in self.summary.items()},
        }
        if self.calibrated is not None:
            c = self.calibrated
            summary["calibrated"] = {
                "calibrator": c.calibrator,
                "n_calibration_tasks": c.n_calibration_tasks,
                "metrics": {k: v.to_dict() for k, v in c.summary.items()},
            }
        (d / "summary.json").write_text(json.dumps(summary, indent=2))
        (d / "per_task.jsonl").write_text(_jsonl(self.per_task, self.n_tasks))
        if self.calibrated is not None:
            (d / "calibrated_per_task.jsonl").write_text(_jsonl(self.calibrated.per_task, self.n_tasks))
        if self.predictions:
            atomic_torch_save(self.predictions, d / "predictions.pt")
        return d

    def table(self) -> str:
        """One-row results table (see :func:`format_table`)."""
        return format_table([self])


def _jsonl(per_task: dict[str, torch.Tensor], n_tasks: int) -> str:
    names = list(per_task)
    return "\n".join(json.dumps({n: float(per_task[n][i]) for n in names}) for i in range(n_tasks)) + "\n"


def _fit_calibrator(
    learner: MetaLearner,
    calibrator: Calibrator | str,
    calibration_episodes: Sequence[TaskBatch] | None,
    episodes: Sequence[TaskBatch],
    kind: str,
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
    test_ids = {id(b) for b in episodes}
    if calibration_episodes is episodes or any(id(b) in test_ids for b in calibration_episodes):
        raise InvalidValueError(
            "calibration_episodes: expected validation episodes disjoint from the test episodes; fitting a "
            "calibrator on the test episodes overstates its calibration"
        )
    cal = make_calibrator(calibrator, kind) if isinstance(calibrator, str) else calibrator
    preds, ys, ms = [], [], []
    for episode in tqdm(calibration_episodes, desc="calibrate", disable=not progress, leave=False):
        if episode.is_classification != (kind == "classification"):
            raise InvalidValueError(f"calibration_episodes: expected {kind} episodes like the test episodes")
        for batch in _task_chunks(episode, max_tasks_per_call):
            torch.manual_seed(seed)  # as for the test episodes (see evaluate)
            preds.append(learner(batch))
            ys.append(batch.query_y)
            ms.append(batch.query_mask)
    pred, y, mask = stack_predictives(preds, ys, ms)
    return cal.fit(pred, y, mask), pred.batch_shape[0]


def _collect(pred: Predictive, batch: TaskBatch) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    if isinstance(pred, CategoricalPredictive):
        out["sample_log_probs"] = pred.sample_log_probs.detach().float().cpu()
    elif isinstance(pred, GaussianPredictive):
        out["sample_mean"] = pred.sample_mean.detach().float().cpu()
        out["sample_variance"] = pred.sample_variance.detach().float().cpu()
    out["targets"] = batch.query_y.detach().cpu()
    if batch.query_mask is not None:
        out["query_mask"] = batch.query_mask.cpu()
    return out


def _task_chunks(batch: TaskBatch, size: int | None) -> list[TaskBatch]:
    """``batch`` split into consecutive groups of at most ``size`` tasks."""
    if size is None or batch.n_tasks <= size:
        return [batch]
    return [batch.index(slice(i, i + size)) for i in range(0, batch.n_tasks, size)]


def evaluate(
    learner: MetaLearner,
    episodes: Sequence[TaskBatch],
    *,
    method: str | None = None,
    keep_predictions: bool = True,
    progress: bool = True,
    seed: int = 0,
    max_tasks_per_call: int | None = 4,
    calibrator: Calibrator | str | None = None,
    calibration_episodes: Sequence[TaskBatch] | None = None,
) -> EvaluationResult:
    """Evaluate ``learner`` on a fixed list of episodes.

    Args:
        learner: any :class:`~bayesmeta.inference.MetaLearner`.
        episodes: task batches, e.g. from :func:`bayesmeta.tasks.fixed_episodes`; every method
            compared should get the very same list.
        method: label for tables; defaults to the learner's class name.
        keep_predictions: keep the predictive tensors for reports (memory: M*T*Q*C floats).
        progress: show a tqdm bar.
        seed: seed of the bootstrap intervals and of any sampling inside ``predict`` (the global
            torch RNG state is restored afterwards). The RNG is re-seeded before every learner
            call and sampling learners draw per-task noise (DESIGN.md section 4), so a task's
            numbers do not depend on which episode or call it is evaluated in.
        max_tasks_per_call: split each episode into calls of at most this many tasks (``None``:
            whole episodes), so that peak memory does not grow with ``tasks_per_batch``. The
            per-task results do not depend on it.
        calibrator: optional post-hoc calibrator, unfitted: an object of
            :mod:`bayesmeta.calibration` (``TemperatureScaling()``, ``VarianceScaling()``,
            ``SplitConformal(alpha=0.1)``) or a name, ``"temperature"`` or ``"conformal"``
            (see :func:`bayesmeta.calibration.make_calibrator`). It is fitted on
            ``calibration_episodes`` and the test metrics after it fill ``result.calibrated``.
        calibration_episodes: validation episodes to fit the calibrator on; required with a
            calibrator, and refused if they share a batch with ``episodes``.

    Returns:
        :class:`EvaluationResult` over all tasks of all episodes.
    """
    if len(episodes) == 0:
        raise InvalidValueError("episodes: expected at least one TaskBatch, got an empty sequence")
    if max_tasks_per_call is not None and (
        isinstance(max_tasks_per_call, bool) or not isinstance(max_tasks_per_call, int) or max_tasks_per_call < 1
    ):
        raise InvalidValueError(f"max_tasks_per_call: expected a positive int or None, got {max_tasks_per_call!r}")
    was_training = learner.training
    learner.eval()
    per_task: dict[str, list[torch.Tensor]] = {}
    preds: dict[str, list[torch.Tensor]] = {}
    kind = "classification" if episodes[0].is_classification else "regression"
    cal_task: dict[str, list[torch.Tensor]] = {}
    fitted: Calibrator | None = None
    rng_state = torch.get_rng_state()
    try:
        with torch.no_grad():
            if calibrator is not None:
                fitted, n_cal = _fit_calibrator(
                    learner, calibrator, calibration_episodes, episodes, kind, progress, seed, max_tasks_per_call
                )
            for episode in tqdm(episodes, desc="evaluate", disable=not progress, leave=False):
                for batch in _task_chunks(episode, max_tasks_per_call):
                    torch.manual_seed(seed)
                    pred = learner(batch)
                    for k, v in task_metrics(pred, batch.query_y, batch.query_mask).items():
                        per_task.setdefault(k, []).append(v.detach().double().cpu())
                    if fitted is not None:
                        for k, v in calibrated_task_metrics(fitted, pred, batch.query_y, batch.query_mask).items():
                            cal_task.setdefault(k, []).append(v.detach().double().cpu())
                    if keep_predictions:
                        for k, v in _collect(pred, batch).items():
                            preds.setdefault(k, []).append(v)
    finally:
        torch.set_rng_state(rng_state)
        learner.train(was_training)
    cat = {k: torch.cat(v) for k, v in per_task.items()}
    predictions: dict[str, torch.Tensor] = {}
    for k, v in preds.items():
        try:
            # Sample dim first for predictive tensors; the task dim is where episodes stack.
            predictions[k] = torch.cat(v, dim=1 if k.startswith("sample_") else 0)
        except RuntimeError:
            # Episodes of different query sizes cannot be stacked; reports then use per-task data.
            predictions = {}
            break
    summary = {k: mean_ci(v, seed=seed) for k, v in cat.items() if bool(torch.isfinite(v).all())}
    calibrated = None
    if fitted is not None:
        ccat = {k: torch.cat(v) for k, v in cal_task.items()}
        csum = {k: mean_ci(v, seed=seed) for k, v in ccat.items() if bool(torch.isfinite(v).all())}
        calibrated = CalibratedResult(describe_calibrator(fitted), n_cal, ccat, csum)
    return EvaluationResult(method or type(learner).__name__, kind, cat, summary, predictions, calibrated)


def load_predictions(eval_dir: str | Path) -> tuple[Predictive, torch.Tensor, torch.Tensor | None]:
    """Read ``predictions.pt`` back as ``(predictive, targets, query_mask)``.

    Raises:
        CheckpointError: the file is missing, truncated or holds anything but plain tensors.
    """
    d = safe_torch_load(Path(eval_dir) / "predictions.pt")
    if "sample_log_probs" in d:
        pred: Predictive = CategoricalPredictive(logits=d["sample_log_probs"])
    elif "sample_mean" in d:
        pred = GaussianPredictive(d["sample_mean"], d["sample_variance"])
    else:
        raise CheckpointError(f"{eval_dir}/predictions.pt: holds neither classification nor regression predictions")
    return pred, d["targets"], d.get("query_mask")


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


