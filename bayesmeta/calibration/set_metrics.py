"""Per-task summaries of conformal sets and intervals: coverage, set size, empty sets, width.

Like every metric of bayesmeta they keep the task as the unit: each returns ``[T]`` values (the
mean over the task's present query points), which evaluation aggregates with a CI over tasks.
"""

from __future__ import annotations

import torch

from bayesmeta._validation import ArrayLike, as_tensor, check_mask, describe
from bayesmeta.exceptions import InvalidValueError, ShapeError
from bayesmeta.masked import masked_mean

__all__ = ["conformal_metrics"]


def _task_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Per-task float64 mean over the query points ``[T, Q] -> [T]`` (bool rates included)."""
    return masked_mean(x.double(), mask, dim=-1)


def conformal_metrics(
    sets: torch.Tensor, targets: ArrayLike, mask: ArrayLike | None = None
) -> dict[str, torch.Tensor]:
    """Per-task coverage and size of conformal prediction sets or intervals.

    Args:
        sets: bool ``[T, Q, C]`` prediction sets, or ``[T, Q, Dy, 2]`` intervals (lower, upper).
        targets: ``[T, Q]`` class indices, or ``[T, Q, Dy]`` (``[T, Q]`` when ``Dy = 1``) values.
        mask: optional bool ``[T, Q]``.

    Returns:
        Classification: ``conformal_coverage`` (fraction of query points whose label is in the
        set), ``conformal_set_size`` (mean number of classes) and ``conformal_empty_rate``
        (fraction of empty sets), each ``[T]``. Regression: ``conformal_coverage`` (fraction of
        targets inside the interval, averaged over output dims) and ``conformal_width`` (mean
        interval width), each ``[T]``.
    """
    if not isinstance(sets, torch.Tensor):
        raise ShapeError(f"sets: expected a tensor, got {type(sets).__name__}")
    y = as_tensor("targets", targets).to(sets.device)
    if sets.dtype == torch.bool:
        if sets.dim() != 3:
            raise ShapeError(f"sets: expected a bool [T, Q, C] tensor, got {describe(sets)}")
        if tuple(y.shape) != tuple(sets.shape[:2]) or y.is_floating_point():
            raise ShapeError(f"targets: expected integer class indices of shape {list(sets.shape[:2])}, got {describe(y)}")
        m = check_mask(mask, sets.shape[:2])
        covered = sets.gather(-1, y.long().clamp(0, sets.shape[-1] - 1).unsqueeze(-1)).squeeze(-1)
        size = sets.sum(-1)
        return {
            "conformal_coverage": _task_mean(covered, m),
            "conformal_set_size": _task_mean(size, m),
            "conformal_empty_rate": _task_mean(size == 0, m),
        }
    if sets.dim() != 4 or sets.shape[-1] != 2 or not sets.is_floating_point():
        raise ShapeError(f"sets: expected bool [T, Q, C] sets or floating [T, Q, Dy, 2] intervals, got {describe(sets)}")
    if tuple(y.shape) == tuple(sets.shape[:2]) and sets.shape[2] == 1:
        y = y.unsqueeze(-1)
    if tuple(y.shape) != tuple(sets.shape[:3]):
        raise ShapeError(f"targets: expected shape {list(sets.shape[:3])}, got {describe(y)}")
    if not y.is_floating_point():
        raise InvalidValueError(f"targets: expected real-valued targets, got {describe(y)}")
    m = check_mask(mask, sets.shape[:2])
    inside = ((y >= sets[..., 0]) & (y <= sets[..., 1])).double().mean(-1)
    width = (sets[..., 1] - sets[..., 0]).clamp_min(0.0).double().mean(-1)
    return {"conformal_coverage": _task_mean(inside, m), "conformal_width": _task_mean(width, m)}
