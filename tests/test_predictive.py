"""Predictive types against closed forms and direct computations."""

from __future__ import annotations

import math

import pytest
import torch

from bayesmeta.exceptions import BayesMetaError
from bayesmeta.predictive import CategoricalPredictive, GaussianPredictive


def test_categorical_mixture_and_uncertainty_decomposition() -> None:
    torch.manual_seed(0)
    logits = torch.randn(4, 2, 3, 5, dtype=torch.float64)
    pred = CategoricalPredictive(logits=logits)
    p = torch.softmax(logits, -1)
    torch.testing.assert_close(pred.probs, p.mean(0))
    h = lambda q: -(q * q.log()).sum(-1)  # noqa: E731
    torch.testing.assert_close(pred.entropy, h(p.mean(0)))
    torch.testing.assert_close(pred.expected_entropy, h(p).mean(0))
    assert bool((pred.mutual_information >= 0).all())
    y = torch.randint(5, (2, 3))
    torch.testing.assert_close(pred.log_prob(y), p.mean(0).gather(-1, y.unsqueeze(-1)).squeeze(-1).log())


def test_categorical_exact_zero_probabilities_give_finite_entropy() -> None:
    probs = torch.tensor([[[[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]]]])
    pred = CategoricalPredictive(probs=probs)
    torch.testing.assert_close(pred.entropy, torch.tensor([[0.0, math.log(2)]]))
    assert bool(torch.isfinite(pred.mutual_information).all())


def test_gaussian_mixture_moments_cdf_and_interval() -> None:
    torch.manual_seed(1)
    mean = torch.randn(3, 2, 4, 1, dtype=torch.float64)
    var = torch.rand(3, 2, 4, 1, dtype=torch.float64) + 0.1
    pred = GaussianPredictive(mean, var)
    torch.testing.assert_close(pred.mean, mean.mean(0))
    torch.testing.assert_close(pred.variance, var.mean(0) + mean.var(0, unbiased=False))
    lo, hi = pred.interval(0.9)
    torch.testing.assert_close(pred.cdf(lo), torch.full_like(lo, 0.05))
    torch.testing.assert_close(pred.cdf(hi), torch.full_like(hi, 0.95))
    y = torch.randn(2, 4, 1, dtype=torch.float64)
    dens = torch.exp(-0.5 * (y - mean) ** 2 / var) / torch.sqrt(2 * math.pi * var)
    torch.testing.assert_close(pred.log_prob(y), dens.mean(0).log().squeeze(-1))
    draws = pred.sample(20000, generator=torch.Generator().manual_seed(0))
    assert draws.shape == (20000, 2, 4, 1)
    # Monte Carlo: standard error of the mean is sd/sqrt(n) ~ 0.01; 5 standard errors
    se = pred.stddev / math.sqrt(20000)
    assert bool(((draws.mean(0) - pred.mean).abs() < 5 * se).all())


def test_single_gaussian_interval_is_closed_form() -> None:
    pred = GaussianPredictive(torch.zeros(1, 1, 1, 1), torch.full((1, 1, 1, 1), 4.0))
    lo, hi = pred.interval(0.95)
    assert float(hi) == pytest.approx(1.959964 * 2.0, rel=1e-5)
    assert float(lo) == pytest.approx(-1.959964 * 2.0, rel=1e-5)


def test_bad_predictive_inputs() -> None:
    with pytest.raises(BayesMetaError, match="variance"):
        GaussianPredictive(torch.zeros(1, 1, 2, 1), -torch.ones(1, 1, 2, 1))
    with pytest.raises(BayesMetaError, match="probs"):
        CategoricalPredictive(probs=torch.full((1, 1, 1, 3), 0.5))
    with pytest.raises(BayesMetaError, match="logits"):
        CategoricalPredictive(logits=torch.tensor([[[[float("nan"), 0.0]]]]))
    with pytest.raises(BayesMetaError, match="y"):
        CategoricalPredictive(logits=torch.zeros(1, 2, 3, 4)).log_prob(torch.zeros(2, 3, dtype=torch.long) + 4)
