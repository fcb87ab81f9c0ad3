"""Calibration, regression-calibration and selective-prediction metrics, aggregated over tasks."""

from bayesmeta.metrics.aggregation import MeanCI, mean_ci

__all__ = ["MeanCI", "mean_ci"]
