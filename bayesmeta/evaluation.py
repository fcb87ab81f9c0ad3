"""Evaluation on fixed episodes: per-task results, a summary with 95% CIs over tasks, files on disk.

``evaluate(learner, episodes)`` adapts to every episode's support set, predicts its query set and
computes every per-task metric of :func:`bayesmeta.metrics.task_metrics`. Results keep the task
as the unit: ``per_task[name]`` is ``[T]`` over all episodes' tasks, and the summary is a mean
with a seeded bootstrap interval over tasks (:func:`bayesmeta.metrics.mean_ci`).

On disk (``EvaluationResult.save``), a run's ``eval/`` folder holds ``summary.json``,
``per_task.jsonl`` (one line per task) and ``predictions.pt`` (plain tensors only, loadable with
``torch.load(weights_only=True)``), which ``bayesmeta report`` reads.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from bayesmeta.exceptions import CheckpointError, InvalidValueError
from bayesmeta.inference.base import MetaLearner
from bayesmeta.io import atomic_torch_save, safe_torch_load
from bayesmeta.metrics import MeanCI, mean_ci, task_metrics
from bayesmeta.predictive import CategoricalPredictive, GaussianPredictive, Predictive
from bayesmeta.tasks.batch import TaskBatch

__all__ = ["EvaluationResult", "evaluate", "load_predictions", "format_table"]

#: Metrics shown in the default results table, in order, when present.
HEADLINE = ("accuracy", "mse", "nll", "ece", "brier", "pit_error", "coverage_90", "crps")


@dataclass
class EvaluationResult:
    """Per-task metrics over a fixed list of episodes and their summary.

    Attributes:
        method: a label for tables (the learner's class name or the config's method name).
        task_kind: ``"classification"`` or ``"regression"``.
        per_task: metric name -> ``[T]`` tensor, one value per task over all episodes.
        summary: metric name -> mean and 95% CI over tasks.
        predictions: plain tensors of the predictive and targets (see module docstring).
    """

    method: str
    task_kind: str
    per_task: dict[str, torch.Tensor]
    summary: dict[str, MeanCI]
    predictions: dict[str, torch.Tensor] = field(default_factory=dict)

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
        (d / "summary.json").write_text(json.dumps(summary, indent=2))
        names = list(self.per_task)
        lines = [
            json.dumps({n: float(self.per_task[n][i]) for n in names}) for i in range(self.n_tasks)
        ]
        (d / "per_task.jsonl").write_text("\n".join(lines) + "\n")
        if self.predictions:
            atomic_torch_save(self.predictions, d / "predictions.pt")
        return d

    def table(self) -> str:
        """One-row results table (see :func:`format_table`)."""
        return format_table([self])


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
    rng_state = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        with torch.no_grad():
            for episode in tqdm(episodes, desc="evaluate", disable=not progress, leave=False):
                for batch in _task_chunks(episode, max_tasks_per_call):
                    torch.manual_seed(seed)
                    pred = learner(batch)
                    for k, v in task_metrics(pred, batch.query_y, batch.query_mask).items():
                        per_task.setdefault(k, []).append(v.detach().double().cpu())
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
    return EvaluationResult(method or type(learner).__name__, kind, cat, summary, predictions)


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

    Accuracy is shown in percent. Metrics absent from every result are left out.
    """
    cols = [m for m in metrics if any(m in r.summary for r in results)]
    header = ["method", "tasks"] + [f"{c} (%)" if c == "accuracy" else c for c in cols]
    rows = []
    for r in results:
        row = [r.method, str(r.n_tasks)]
        for c in cols:
            s = r.summary.get(c)
            row.append("—" if s is None else s.format(scale=100.0 if c == "accuracy" else 1.0, digits=2 if c == "accuracy" else 3))
        rows.append(row)
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]
    fmt = lambda r: "  ".join(x.ljust(w) for x, w in zip(r, widths))  # noqa: E731
    lines = [fmt(header), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows]
    lines.append("(mean ± half-width of the 95% bootstrap CI over tasks)")
    return "\n".join(lines)


