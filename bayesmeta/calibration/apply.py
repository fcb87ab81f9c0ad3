"""Calibrators in evaluation: build one by name, pool validation predictives, score test tasks.

:func:`bayesmeta.evaluate` runs the learner (this module never sees one) and hands predictives
here: :func:`stack_predictives` pools the validation episodes' predictives into one ``[T, Q]``
batch (padding ragged query sets with a mask), the calibrator is fitted on it, and
:func:`calibrated_task_metrics` gives the per-task metrics of each test episode after calibration.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from bayesmeta.calibration.conformal import SplitConformal
from bayesmeta.calibration.set_metrics import conformal_metrics
from bayesmeta.calibration.temperature import TemperatureScaling
from bayesmeta.calibration.variance import VarianceScaling
from bayesmeta.exceptions import InvalidValueError, ShapeError
from bayesmeta.metrics.task_metrics import task_metrics
from bayesmeta.predictive import CategoricalPredictive, GaussianPredictive, Predictive

__all__ = ["CALIBRATORS", "Calibrator", "make_calibrator", "stack_predictives", "calibrated_task_metrics", "describe_calibrator"]

Calibrator = TemperatureScaling | VarianceScaling | SplitConformal

CALIBRATORS: tuple[str, ...] = ("temperature", "conformal")
"""Names accepted by :func:`make_calibrator` (and ``bayesmeta evaluate --calibrate``)."""


def make_calibrator(name: str, task_kind: str, **options: Any) -> Calibrator:
    """An unfitted calibrator by name.

    Args:
        name: ``"temperature"`` (temperature scaling for classification, its regression
            counterpart :class:`VarianceScaling` for regression) or ``"conformal"``
            (:class:`SplitConformal`; ``options`` such as ``alpha`` and ``score`` go to it).
        task_kind: ``"classification"`` or ``"regression"``.

    Raises:
        InvalidValueError: an unknown name or task kind, or options for temperature scaling.
    """
    if task_kind not in ("classification", "regression"):
        raise InvalidValueError(f"task_kind: expected 'classification' or 'regression', got {task_kind!r}")
    if name == "temperature":
        if options:
            raise InvalidValueError(f"options: temperature scaling takes none, got {sorted(options)}")
        return TemperatureScaling() if task_kind == "classification" else VarianceScaling()
    if name == "conformal":
        return SplitConformal(**options)
    raise InvalidValueError(f"calibrator: expected one of {', '.join(CALIBRATORS)} or a calibrator object, got {name!r}")


def describe_calibrator(fitted: Calibrator) -> dict[str, Any]:
    """Plain-JSON description of a fitted calibrator (what ``summary.json`` records)."""
    return fitted.to_dict()


def _pad(t: torch.Tensor, q: int, dim: int) -> torch.Tensor:
    if t.shape[dim] == q:
        return t
    shape = list(t.shape)
    shape[dim] = q - t.shape[dim]
    # padding is masked out; a valid filler (zeros, or ones for variances) keeps predictives valid
    return torch.cat([t, torch.zeros(shape, dtype=t.dtype, device=t.device)], dim)


def stack_predictives(
    preds: Sequence[Predictive], targets: Sequence[torch.Tensor], masks: Sequence[torch.Tensor | None]
) -> tuple[Predictive, torch.Tensor, torch.Tensor | None]:
    """Pool episodes' predictives along the task dim, padding query sets to the largest.

    Args:
        preds: one predictive per episode, ``[M, T_e, Q_e, ...]``, all of one kind and one M.
        targets: their targets ``[T_e, Q_e]`` or ``[T_e, Q_e, Dy]``.
        masks: their query masks ``[T_e, Q_e]`` or None.

    Returns:
        ``(predictive, targets, mask)`` over all ``sum(T_e)`` tasks; ``mask`` is None when no
        episode had one and all query sets had the same size.
    """
    if not preds:
        raise InvalidValueError("calibration_episodes: expected at least one episode, got none")
    q = max(p.batch_shape[1] for p in preds)
    ragged = any(p.batch_shape[1] != q for p in preds)
    need_mask = ragged or any(m is not None for m in masks)
    ms = [
        _pad(m if m is not None else torch.ones(p.batch_shape, dtype=torch.bool), q, 1) if need_mask else None
        for p, m in zip(preds, masks, strict=True)
    ]
    ys = [_pad(y, q, 1) for y in targets]
    mask = torch.cat(ms) if need_mask else None  # type: ignore[arg-type]
    if all(isinstance(p, CategoricalPredictive) for p in preds):
        if len({p.n_classes for p in preds}) != 1 or len({p.n_samples for p in preds}) != 1:
            raise ShapeError("calibration_episodes: expected one number of classes and of samples M in every episode")
        lp = torch.cat([_pad(p.sample_log_probs.detach(), q, 2) for p in preds], 1)
        return CategoricalPredictive(logits=lp), torch.cat(ys), mask
    if all(isinstance(p, GaussianPredictive) for p in preds):
        if len({p.n_samples for p in preds}) != 1:
            raise ShapeError("calibration_episodes: expected one number of samples M in every episode")
        mean = torch.cat([_pad(p.sample_mean.detach(), q, 2) for p in preds], 1)
        var = torch.cat([_pad(p.sample_variance.detach() - 1.0, q, 2) + 1.0 for p in preds], 1)
        return GaussianPredictive(mean, var), torch.cat(ys), mask
    raise InvalidValueError("calibration_episodes: expected predictives of one kind (all categorical or all Gaussian)")


def calibrated_task_metrics(
    fitted: Calibrator, pred: Predictive, targets: torch.Tensor, mask: torch.Tensor | None
) -> dict[str, torch.Tensor]:
    """Per-task metrics ``[T]`` after calibration.

    Scaling calibrators give every metric of :func:`bayesmeta.metrics.task_metrics` on the
    transformed predictive; conformal gives :func:`conformal_metrics` of its sets or intervals.
    """
    if isinstance(fitted, SplitConformal):
        return conformal_metrics(fitted.predict(pred), targets, mask)
    return task_metrics(fitted(pred), targets, mask)  # type: ignore[arg-type]
