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


# ------------------------------------------------- gaps found by mutation testing (docs/testing.md)
F64 = torch.float64


@pytest.mark.parametrize(
    ("make", "kind", "message"),
    [
        (lambda: CategoricalPredictive(logits=torch.zeros(1, 2, 3, 4), probs=torch.ones(1, 2, 3, 4) / 4), "InvalidValueError",
         r"^CategoricalPredictive: pass exactly one of logits and probs$"),
        (lambda: CategoricalPredictive(), "InvalidValueError", r"^CategoricalPredictive: pass exactly one"),
        (lambda: CategoricalPredictive(logits=torch.zeros(3, 4)), "ShapeError", r"^logits: expected a 3 or 4-d tensor \(\[M, T, Q, C\] or \[T, Q, C\]\), got shape \[3, 4\]"),
        (lambda: CategoricalPredictive(probs=torch.ones(3, 4) / 4), "ShapeError", r"^probs: expected a 3 or 4-d tensor \(\[M, T, Q, C\] or \[T, Q, C\]\), got shape \[3, 4\]"),
        (lambda: CategoricalPredictive(logits=torch.full((1, 2, 3, 4), float("nan"))), "InvalidValueError", r"^logits"),
        (lambda: CategoricalPredictive(probs=torch.full((1, 2, 3, 4), float("nan"))), "InvalidValueError", r"^probs"),
        (lambda: CategoricalPredictive(probs=torch.tensor([[[[1.1, -0.1]]]])), "InvalidValueError",
         r"^probs: expected non-negative probabilities, got min -0.1$"),
        (lambda: CategoricalPredictive(probs=torch.tensor([[[[0.5, 0.5002]]]], dtype=F64)), "InvalidValueError", r"^probs"),
        (lambda: GaussianPredictive(torch.zeros(3, 1), torch.ones(3, 1)), "ShapeError", r"^mean: expected a 3 or 4-d tensor \(\[M, T, Q, Dy\] or \[T, Q, Dy\]\), got shape \[3, 1\]"),
        (lambda: GaussianPredictive(torch.zeros(1, 2, 3, 1), torch.ones(1, 2, 4, 1)), "ShapeError",
         r"^variance: expected shape \[1, 2, 3, 1\] to match mean, got .*\[1, 2, 4, 1\]"),
        (lambda: GaussianPredictive(torch.full((2, 3, 1), float("inf")), torch.ones(2, 3, 1)), "InvalidValueError", r"^mean"),
        (lambda: GaussianPredictive(torch.zeros(2, 3, 1), torch.full((2, 3, 1), float("nan"))), "InvalidValueError", r"^variance"),
        (lambda: GaussianPredictive(torch.zeros(2, 3, 1), torch.zeros(2, 3, 1)), "InvalidValueError", r"^variance"),  # zero variance
    ],
)
def test_bad_constructor_inputs_are_named(make, kind: str, message: str) -> None:
    with pytest.raises(BayesMetaError, match=message) as e:
        make()
    assert type(e.value).__name__ == kind


def test_probs_are_renormalized_and_empty_sets_are_accepted() -> None:
    probs = torch.tensor([[[[0.25, 0.75 + 5e-5]]]], dtype=F64)  # within the 1e-4 tolerance: renormalized
    pred = CategoricalPredictive(probs=probs)
    torch.testing.assert_close(pred.probs, (probs / probs.sum(-1, keepdim=True))[0], rtol=1e-15, atol=0)
    assert CategoricalPredictive(probs=torch.zeros(1, 0, 3, 4)).batch_shape == (0, 3)


def test_three_dim_inputs_are_one_sample_and_repr_says_the_shape() -> None:
    g = GaussianPredictive(torch.zeros(2, 3, 1), torch.ones(2, 3, 1))
    assert g.sample_mean.shape == g.sample_variance.shape == (1, 2, 3, 1) and g.n_samples == 1
    c = CategoricalPredictive(logits=torch.zeros(2, 3, 5))
    assert c.sample_log_probs.shape == (1, 2, 3, 5)
    assert repr(g) == "GaussianPredictive(M=1, T=2, Q=3, Dy=1)" and repr(c) == "CategoricalPredictive(M=1, T=2, Q=3, C=5)"


def test_log_prob_target_errors_are_named() -> None:
    c = CategoricalPredictive(logits=torch.zeros(1, 2, 3, 4))
    with pytest.raises(BayesMetaError, match=r"^y: expected class indices of shape \[2, 3\], got .*\[2, 4\]"):
        c.log_prob(torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(BayesMetaError, match=r"^y: expected integer class indices, got .*float32"):
        c.log_prob(torch.zeros(2, 3))
    gp = GaussianPredictive(torch.zeros(1, 2, 3, 1), torch.ones(1, 2, 3, 1))
    with pytest.raises(BayesMetaError, match=r"^y: expected targets of shape \[2, 3, 1\], got .*\[2, 3\]"):
        gp.log_prob(torch.zeros(2, 3))
    with pytest.raises(BayesMetaError, match=r"^y"):
        gp.log_prob(torch.full((2, 3, 1), float("nan")))


def test_detach_cuts_the_graph_and_keeps_the_values() -> None:
    w = torch.randn(2, 2, 3, 4, dtype=F64, requires_grad=True)
    c = CategoricalPredictive(logits=w * 2)
    cd = c.detach()
    assert not cd.sample_log_probs.requires_grad
    # the copy renormalizes the stored log-probabilities (log_softmax): float64 ulp, not bitwise
    torch.testing.assert_close(cd.sample_log_probs, c.sample_log_probs.detach(), rtol=0, atol=1e-13)
    g = GaussianPredictive(w[..., :1], w[..., 1:2].exp())
    gd = g.detach()
    assert not gd.sample_mean.requires_grad and not gd.sample_variance.requires_grad
    assert torch.equal(gd.sample_mean, g.sample_mean.detach()) and torch.equal(gd.sample_variance, g.sample_variance.detach())


def test_sampling_uses_the_given_generator_not_the_global_rng() -> None:
    c = CategoricalPredictive(logits=torch.randn(3, 2, 4, 5))
    g = GaussianPredictive(torch.randn(3, 2, 4, 1), torch.rand(3, 2, 4, 1) + 0.1)
    for draw in (lambda gen: c.sample(generator=gen), lambda gen: g.sample(50, generator=gen)):
        torch.manual_seed(0)
        a = draw(torch.Generator().manual_seed(5))
        torch.manual_seed(1)
        b = draw(torch.Generator().manual_seed(5))
        assert torch.equal(a, b)
    assert g.sample().shape == (1, 2, 4, 1)  # n defaults to one draw


def test_mixture_quantiles_match_a_scipy_root_find_in_float64() -> None:
    from scipy import optimize, stats

    mean = torch.tensor([[[[-1.0]], [[0.3]]], [[[2.0]], [[0.1]]]], dtype=F64)  # [M=2, T=2, Q=1, 1]
    var = torch.tensor([[[[0.5]], [[1.0]]], [[[1.5]], [[0.2]]]], dtype=F64)
    pred = GaussianPredictive(mean, var)
    for p in (0.05, 0.3, 0.9):
        q = pred.icdf(p)
        for t in range(2):
            m, s = mean[:, t, 0, 0].numpy(), var[:, t, 0, 0].sqrt().numpy()
            ref = optimize.brentq(lambda x, m=m, s=s, p=p: stats.norm.cdf(x, m, s).mean() - p, -20, 20, xtol=1e-14)
            assert float(q[t, 0, 0]) == pytest.approx(ref, abs=1e-10), (p, t)  # float64 bisection
    lo, hi = pred.interval()  # default level 0.9
    # interval(0.9) asks for the levels (1 - 0.9) / 2 = 0.04999999999999999 and 0.95: the same
    # call as icdf at those levels, bit for bit ...
    a = (1.0 - 0.9) / 2.0
    torch.testing.assert_close(lo, pred.icdf(a), rtol=0, atol=0)
    torch.testing.assert_close(hi, pred.icdf(1.0 - a), rtol=0, atol=0)
    # ... and, against the rounded 0.05 / 0.95, equal to the bisection's float64 resolution: a level
    # one ulp away may end the 64 halvings on a neighbouring float (CI saw 4.4e-16 on one CPU)
    torch.testing.assert_close(lo, pred.icdf(0.05), rtol=0, atol=1e-12)
    torch.testing.assert_close(hi, pred.icdf(0.95), rtol=0, atol=1e-12)
    for bad in (0.0, 1.0, 1.5, -0.2):
        with pytest.raises(BayesMetaError, match=rf"^p: expected probabilities in \(0, 1\), got {bad!r}"):
            pred.icdf(bad)
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(BayesMetaError, match=rf"^level: expected a value in \(0, 1\), got {bad!r}"):
            pred.interval(bad)


def test_gaussian_draws_keep_the_precision_of_the_predictive() -> None:
    """float64 predictive, float64 noise: draws of N(0, 1) are not all float32-representable."""
    g = GaussianPredictive(torch.zeros(1, 3, 50, 1, dtype=F64), torch.ones(1, 3, 50, 1, dtype=F64))
    x = g.sample(4, generator=torch.Generator().manual_seed(0))
    assert x.dtype == F64 and not torch.equal(x, x.float().double())
