"""Every per-task metric of a predictive in one call, and their aggregation over tasks.

:func:`task_metrics` is what the evaluation writes to ``eval/per_task.jsonl`` and
``eval/summary.json``; its keys are the metric names of the report tables, and
:data:`METRIC_INFO` says for each whether lower or higher is better (or which nominal value it
should match), which the report uses to mark the best method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from bayesmeta.exceptions import InvalidValueError
from bayesmeta.metrics._inputs import ArrayLike
from bayesmeta.metrics.aggregation import MeanCI, mean_ci
from bayesmeta.metrics.classification import (
    accuracy,
    brier_score,
    categorical_nll,
    classwise_ece,
    ece,
    mce,
)
from bayesmeta.metrics.regression import (
    crps,
    gaussian_nll,
    interval_coverage,
    mse,
    pit_calibration_error,
    sharpness,
)
from bayesmeta.metrics.selective import accuracy_at_coverage, aurc
from bayesmeta.metrics.shift import task_uncertainty
from bayesmeta.predictive import CategoricalPredictive, GaussianPredictive

__all__ = [
    "MetricInfo",
    "METRIC_INFO",
    "METRIC_ORDER",
    "COVERAGE_LEVELS",
    "task_metrics",
    "aggregate_metrics",
]

COVERAGE_LEVELS: tuple[float, ...] = (0.5, 0.9, 0.95)
"""Nominal levels of the central-interval coverages reported as ``coverage_50`` etc."""


@dataclass(frozen=True)
class MetricInfo:
    """How to read a metric.

    Attributes:
        description: one line for tables and docs.
        better: ``"lower"``, ``"higher"``, ``"nominal"`` (closest to ``target`` is best) or
            ``"none"`` (descriptive, no ordering).
        target: the nominal value for ``better="nominal"``.
    """

    description: str
    better: Literal["lower", "higher", "nominal", "none"]
    target: float | None = None


METRIC_INFO: dict[str, MetricInfo] = {
    "accuracy": MetricInfo("top-1 accuracy", "higher"),
    "nll": MetricInfo("negative log-likelihood (nats)", "lower"),
    "brier": MetricInfo("Brier score, summed over classes", "lower"),
    "ece": MetricInfo("expected calibration error, 15 equal-width bins", "lower"),
    "ece_adaptive": MetricInfo("ECE with 15 equal-mass bins", "lower"),
    "mce": MetricInfo("maximum calibration error, 15 equal-width bins", "lower"),
    "classwise_ece": MetricInfo("classwise ECE, 15 equal-width bins", "lower"),
    "aurc": MetricInfo("area under the risk-coverage curve (entropy ranking)", "lower"),
    "accuracy_at_cov80": MetricInfo("accuracy after referring the 20% most uncertain", "higher"),
    "entropy": MetricInfo("mean total predictive entropy", "none"),
    "expected_entropy": MetricInfo("mean expected entropy (aleatoric)", "none"),
    "mutual_information": MetricInfo("mean mutual information (epistemic)", "none"),
    "mse": MetricInfo("mean squared error of the predictive mean", "lower"),
    "crps": MetricInfo("continuous ranked probability score", "lower"),
    "pit_error": MetricInfo("PIT calibration error (W1 distance to uniform)", "lower"),
    "sharpness": MetricInfo("mean predictive standard deviation", "none"),
    **{
        f"coverage_{round(lv * 100)}": MetricInfo(f"coverage of the central {round(lv * 100)}% interval", "nominal", lv)
        for lv in COVERAGE_LEVELS
    },
}


_UNCERTAINTY = ("entropy", "expected_entropy", "mutual_information")
METRIC_ORDER: dict[str, tuple[str, ...]] = {
    "classification": (
        "accuracy", "nll", "brier", "ece", "ece_adaptive", "mce", "classwise_ece", "aurc",
        "accuracy_at_cov80", *_UNCERTAINTY,
    ),
    "regression": (
        "mse", "nll", "crps", "pit_error", *(f"coverage_{round(lv * 100)}" for lv in COVERAGE_LEVELS),
        "sharpness", "aurc", *_UNCERTAINTY,
    ),
}  # fmt: skip
"""The keys of :func:`task_metrics` per task kind, in table order."""


@torch.no_grad()
def task_metrics(
    predictive: CategoricalPredictive | GaussianPredictive,
    targets: ArrayLike,
    mask: ArrayLike | None = None,
    n_bins: int = 15,
) -> dict[str, torch.Tensor]:
    """Every per-task metric appropriate to the predictive's type.

    Args:
        predictive: ``[M, T, Q, ...]`` categorical or Gaussian predictive.
        targets: ``[T, Q]`` int64 class indices, or ``[T, Q, Dy]`` float regression targets.
        mask: optional bool ``[T, Q]`` (True = present query point).
        n_bins: bins of the calibration errors.

    Returns:
        Metric name -> ``[T]`` float tensor (keys in :data:`METRIC_INFO`). Classification:
        accuracy, nll, brier, ece, ece_adaptive, mce, classwise_ece, aurc, accuracy_at_cov80,
        entropy, expected_entropy, mutual_information. Regression: mse, nll, crps, pit_error,
        coverage_50, coverage_90, coverage_95, sharpness, aurc, entropy, expected_entropy,
        mutual_information.
    """
    if isinstance(predictive, CategoricalPredictive):
        out = {
            "accuracy": accuracy(predictive, targets, mask),
            "nll": categorical_nll(predictive, targets, mask),
            "brier": brier_score(predictive, targets, mask),
            "ece": ece(predictive, targets, n_bins, "equal_width", mask),
            "ece_adaptive": ece(predictive, targets, n_bins, "equal_mass", mask),
            "mce": mce(predictive, targets, n_bins, "equal_width", mask),
            "classwise_ece": classwise_ece(predictive, targets, n_bins, "equal_width", mask),
            "aurc": aurc(predictive, targets, "entropy", mask),
            "accuracy_at_cov80": accuracy_at_coverage(predictive, targets, 0.8, "entropy", mask),
        }
    elif isinstance(predictive, GaussianPredictive):
        cov = interval_coverage(predictive, targets, COVERAGE_LEVELS, mask)
        out = {
            "mse": mse(predictive, targets, mask),
            "nll": gaussian_nll(predictive, targets, mask),
            "crps": crps(predictive, targets, mask),
            "pit_error": pit_calibration_error(predictive, targets, mask),
            **{f"coverage_{round(lv * 100)}": cov[..., i] for i, lv in enumerate(COVERAGE_LEVELS)},
            "sharpness": sharpness(predictive, mask),
            "aurc": aurc(predictive, targets, "entropy", mask),
        }
    else:
        raise InvalidValueError(
            f"predictive: expected a CategoricalPredictive or GaussianPredictive, got {type(predictive).__name__}"
        )
    for score in _UNCERTAINTY:
        out[score] = task_uncertainty(predictive, score, mask)
    kind = "classification" if isinstance(predictive, CategoricalPredictive) else "regression"
    return {k: out[k].detach().to(torch.float64) for k in METRIC_ORDER[kind]}


def aggregate_metrics(
    per_task: dict[str, torch.Tensor],
    level: float = 0.95,
    method: Literal["bootstrap", "normal"] = "bootstrap",
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, MeanCI]:
    """Mean over tasks with a ``level`` CI for each metric (:func:`~bayesmeta.metrics.mean_ci`).

    Every metric uses the same bootstrap seed, hence the same resampled task sets.
    """
    return {k: mean_ci(v, level=level, method=method, n_boot=n_boot, seed=seed) for k, v in per_task.items()}
