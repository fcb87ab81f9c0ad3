"""task_metrics: keys, per-task shapes, consistency with the single metrics, masks, aggregation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bayesmeta.metrics import (
    METRIC_INFO,
    MeanCI,
    aggregate_metrics,
    mean_ci,
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


# --------------------------------------------------- against numpy / scikit-learn / scipy
def _ece_numpy(conf: np.ndarray, hit: np.ndarray, k: int = 15) -> float:
    """Equal-width ECE: bins [i/k, (i+1)/k), confidence 1.0 in the last bin (torchmetrics' rule)."""
    idx = np.clip(np.searchsorted(np.linspace(0, 1, k + 1), conf, side="right") - 1, 0, k - 1)
    return sum(abs(hit[idx == b].mean() - conf[idx == b].mean()) * (idx == b).sum() for b in range(k) if (idx == b).any()) / conf.size


def test_classification_task_metrics_match_sklearn_and_numpy() -> None:
    from sklearn.metrics import accuracy_score, log_loss

    g = torch.Generator().manual_seed(4)
    pred = CategoricalPredictive(logits=2 * torch.randn(3, 5, 40, 4, generator=g, dtype=torch.float64))
    y = torch.randint(0, 4, (5, 40), generator=g)
    mask = torch.rand(5, 40, generator=g) < 0.8
    out = task_metrics(pred, y, mask)
    members = torch.softmax(pred.sample_log_probs, -1).numpy()  # [M, T, Q, C]
    for t in range(5):
        keep = mask[t].numpy()
        p, yt = members.mean(0)[t][keep], y[t].numpy()[keep]  # the mixture over M
        ent = lambda q: -(q * np.log(q)).sum(-1)  # noqa: E731
        ref = {
            "accuracy": accuracy_score(yt, p.argmax(-1)),
            "nll": log_loss(yt, p, labels=range(4)),
            "brier": ((p - np.eye(4)[yt]) ** 2).sum(-1).mean(),
            "ece": _ece_numpy(p.max(-1), (p.argmax(-1) == yt).astype(float)),
            "entropy": ent(p).mean(),
            "expected_entropy": ent(members[:, t][:, keep]).mean(),
            "mutual_information": (ent(p) - ent(members[:, t][:, keep]).mean(0)).mean(),
        }
        for k, v in ref.items():
            assert float(out[k][t]) == pytest.approx(v, rel=1e-9, abs=1e-12), (k, t)  # float64 both


def test_regression_task_metrics_match_scipy() -> None:
    from scipy import stats

    g = torch.Generator().manual_seed(5)
    mu = torch.randn(1, 4, 50, 1, generator=g, dtype=torch.float64)
    var = 0.2 + torch.rand(1, 4, 50, 1, generator=g, dtype=torch.float64)
    y = mu[0] + 1.3 * var[0].sqrt() * torch.randn(4, 50, 1, generator=g, dtype=torch.float64)
    mask = torch.rand(4, 50, generator=g) < 0.7
    out = task_metrics(GaussianPredictive(mu, var), y, mask)
    for t in range(4):
        keep = mask[t].numpy()
        m, sd, yt = mu[0, t, keep, 0].numpy(), var[0, t, keep, 0].sqrt().numpy(), y[t, keep, 0].numpy()
        z = (yt - m) / sd
        ref = {
            "mse": ((m - yt) ** 2).mean(),
            "nll": -stats.norm.logpdf(yt, m, sd).mean(),
            "crps": (sd * (z * (2 * stats.norm.cdf(z) - 1) + 2 * stats.norm.pdf(z) - 1 / np.sqrt(np.pi))).mean(),
            "sharpness": sd.mean(),
            **{f"coverage_{round(100 * lv)}": (np.abs(z) <= stats.norm.ppf(0.5 + lv / 2)).mean() for lv in (0.5, 0.9, 0.95)},
        }
        for k, v in ref.items():
            assert float(out[k][t]) == pytest.approx(v, rel=1e-9, abs=1e-12), (k, t)
