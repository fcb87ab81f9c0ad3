"""Calibration, regression-calibration and selective-prediction metrics, aggregated over tasks.

Metrics take ``(pred, targets)``: a :class:`~bayesmeta.predictive.Predictive` (per-task results
``[T]``) or plain tensors (the last batch dim is averaged over; flat ``[N, C]`` probabilities give
a scalar). See ``docs/metrics.md`` for definitions and conventions.
"""

from bayesmeta.metrics.aggregation import MeanCI, mean_ci
from bayesmeta.metrics.classification import (
    ReliabilityDiagram,
    accuracy,
    brier_score,
    categorical_nll,
    classwise_ece,
    ece,
    mce,
    reliability_diagram,
)
from bayesmeta.metrics.clinical import (
    CLINICAL_METRIC_INFO,
    ConfusionCounts,
    aggregate_clinical,
    balanced_accuracy,
    clinical_metrics,
    confusion_counts,
    missed_positive_rate,
    npv,
    ppv,
    roc_auc,
    sensitivity,
    sensitivity_at_specificity,
    specificity,
)
from bayesmeta.metrics.decision_curve import DEFAULT_THRESHOLDS, DecisionCurve, decision_curve
from bayesmeta.metrics.nll import nll
from bayesmeta.metrics.referral import (
    OBJECTIVES,
    REFERRAL_METRICS,
    ReferralOutcome,
    ReferralRule,
    default_score,
    fit_referral_rule,
    warn_if_constant,
)
from bayesmeta.metrics.regression import (
    coverage,
    crps,
    crps_gaussian,
    gaussian_nll,
    interval_coverage,
    interval_coverage_error,
    mse,
    pit,
    pit_calibration_error,
    pit_histogram,
    sharpness,
)
from bayesmeta.metrics.selective import (
    SCORES,
    RiskCoverage,
    accuracy_at_coverage,
    aurc,
    coverage_at_accuracy,
    coverage_at_risk,
    risk_coverage_curve,
    selective_risk,
)
from bayesmeta.metrics.shift import auroc, shift_detection_auroc, task_uncertainty
from bayesmeta.metrics.task_metrics import (
    COVERAGE_LEVELS,
    METRIC_INFO,
    METRIC_ORDER,
    MetricInfo,
    aggregate_metrics,
    task_metrics,
)
from bayesmeta.metrics.temperature import TemperatureScaling, fit_temperature
from bayesmeta.metrics.uncertainty import (
    expected_entropy,
    mutual_information,
    predictive_entropy,
    uncertainty_decomposition,
)

__all__ = [
    # aggregation
    "MeanCI",
    "mean_ci",
    "aggregate_metrics",
    "task_metrics",
    "MetricInfo",
    "METRIC_INFO",
    "METRIC_ORDER",
    "COVERAGE_LEVELS",
    # classification
    "accuracy",
    "nll",
    "categorical_nll",
    "brier_score",
    "ece",
    "mce",
    "classwise_ece",
    "ReliabilityDiagram",
    "reliability_diagram",
    # regression
    "gaussian_nll",
    "mse",
    "pit",
    "pit_calibration_error",
    "pit_histogram",
    "coverage",
    "interval_coverage",
    "interval_coverage_error",
    "crps",
    "crps_gaussian",
    "sharpness",
    # uncertainty
    "predictive_entropy",
    "expected_entropy",
    "mutual_information",
    "uncertainty_decomposition",
    # selective prediction
    "SCORES",
    "RiskCoverage",
    "risk_coverage_curve",
    "aurc",
    "selective_risk",
    "accuracy_at_coverage",
    "coverage_at_risk",
    "coverage_at_accuracy",
    # shift detection
    "auroc",
    "task_uncertainty",
    "shift_detection_auroc",
    # clinical
    "CLINICAL_METRIC_INFO",
    "ConfusionCounts",
    "confusion_counts",
    "balanced_accuracy",
    "roc_auc",
    "sensitivity",
    "specificity",
    "sensitivity_at_specificity",
    "ppv",
    "npv",
    "missed_positive_rate",
    "clinical_metrics",
    "aggregate_clinical",
    # referral and decision curves
    "ReferralRule",
    "ReferralOutcome",
    "fit_referral_rule",
    "OBJECTIVES",
    "REFERRAL_METRICS",
    "default_score",
    "warn_if_constant",
    "DecisionCurve",
    "decision_curve",
    "DEFAULT_THRESHOLDS",
    # temperature scaling
    "TemperatureScaling",
    "fit_temperature",
]
