"""task_metrics: keys, per-task shapes, consistency with the single metrics, masks, aggregation."""

from __future__ import annotations

import json

import pytest
import torch

from bayesmeta.metrics import (
    METRIC_INFO,
    MeanCI,
    aggregate_metrics,
    crps,
    ece,
    interval_coverage,
    mean_ci,
    nll,
    task_metrics,
)
from bayesmeta.predictive import CategoricalPredictive, GaussianPredictive

CLASS_KEYS = {
    "accuracy", "nll", "brier", "ece", "ece_adaptive", "mce", "classwise_ece", "aurc",
    "accuracy_at_cov80", "entropy", "expected_entropy", "mutual_information",
}  # fmt: skip
REG_KEYS = {
    "mse", "nll", "crps", "pit_error", "coverage_50", "coverage_90", "coverage_95", "sharpness",
    "aurc", "entropy", "expected_entropy", "mutual_information",
}  # fmt: skip


def test_classification_task_metrics() -> None:
    g = torch.Generator().manual_seed(0)
    pred = CategoricalPredictive(logits=torch.randn(3, 7, 25, 4, generator=g, dtype=torch.float64))
    y = torch.randint(0, 4, (7, 25), generator=g)
    out = task_metrics(pred, y)
    assert set(out) == CLASS_KEYS and set(out) <= set(METRIC_INFO)
    assert all(v.shape == (7,) and v.dtype == torch.float64 for v in out.values())
    torch.testing.assert_close(out["ece"], ece(pred, y).double())
    torch.testing.assert_close(out["nll"], nll(pred, y).double())
    mask = torch.ones(7, 25, dtype=torch.bool)
    mask[:, 20:] = False
    masked = task_metrics(pred, y, mask=mask)
    cut = CategoricalPredictive(logits=pred.sample_log_probs[:, :, :20])
    for k, v in task_metrics(cut, y[:, :20]).items():
        torch.testing.assert_close(masked[k], v, msg=k)


def test_regression_task_metrics_and_json_roundtrip() -> None:
    g = torch.Generator().manual_seed(1)
    pred = GaussianPredictive(torch.randn(2, 5, 30, 1, generator=g), 0.5 + torch.rand(2, 5, 30, 1, generator=g))
    y = torch.randn(5, 30, 1, generator=g)
    out = task_metrics(pred, y)
    assert set(out) == REG_KEYS
    torch.testing.assert_close(out["crps"], crps(pred, y).double())
    torch.testing.assert_close(out["coverage_90"], interval_coverage(pred, y, (0.9,))[:, 0].double())
    agg = aggregate_metrics(out)
    assert set(agg) == REG_KEYS and all(isinstance(v, MeanCI) for v in agg.values())
    ci = agg["mse"]
    assert ci == mean_ci(out["mse"]) and ci.low <= ci.mean <= ci.high and ci.n == 5
    assert agg["mse"] == aggregate_metrics(out)["mse"]  # seeded bootstrap: reproducible
    json.dumps({k: v.to_dict() for k, v in agg.items()})  # plain JSON


def test_metric_info_is_complete() -> None:
    for name, info in METRIC_INFO.items():
        assert info.better in {"lower", "higher", "nominal", "none"}, name
        assert (info.target is not None) == (info.better == "nominal"), name
    assert METRIC_INFO["coverage_90"].target == pytest.approx(0.9)
