"""Regression metrics against scipy: CRPS closed form and integral, PIT uniformity, NLL, coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bayesmeta.metrics import (
    coverage,
    crps,
    crps_gaussian,
    gaussian_nll,
    interval_coverage,
    interval_coverage_error,
    mse,
    nll,
    pit,
    pit_calibration_error,
    pit_histogram,
    sharpness,
)
from bayesmeta.predictive import GaussianPredictive


def _mixture(m: int, t: int, q: int, dy: int, seed: int) -> tuple[GaussianPredictive, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(m, t, q, dy, generator=g, dtype=torch.float64)
    var = 0.2 + torch.rand(m, t, q, dy, generator=g, dtype=torch.float64)
    pred = GaussianPredictive(mean, var)
    return pred, pred.sample(1, generator=g)[0]


def _crps_integral(means: np.ndarray, sds: np.ndarray, y: float) -> float:
    """``integral (F(x) - 1[x >= y])^2 dx`` of the uniform mixture by adaptive quadrature."""
    from scipy import integrate, stats

    def cdf(x: float) -> float:
        return float(np.mean(stats.norm.cdf(x, means, sds)))

    lo, hi = min(means.min() - 12 * sds.max(), y), max(means.max() + 12 * sds.max(), y)
    left = integrate.quad(lambda x: cdf(x) ** 2, lo, y, limit=200)[0]
    right = integrate.quad(lambda x: (1 - cdf(x)) ** 2, y, hi, limit=200)[0]
    return left + right


def test_crps_gaussian_matches_closed_form_and_quadrature() -> None:
    from scipy import stats
    rng = np.random.default_rng(0)
    mu, sd, y = rng.normal(size=20), rng.uniform(0.1, 3, 20), rng.normal(size=20) * 2
    ours = crps_gaussian(torch.tensor(mu), torch.tensor(sd**2), torch.tensor(y)).numpy()
    z = (y - mu) / sd
    closed = sd * (z * (2 * stats.norm.cdf(z) - 1) + 2 * stats.norm.pdf(z) - 1 / np.sqrt(np.pi))
    np.testing.assert_allclose(ours, closed, rtol=1e-12)
    for i in range(5):
        assert ours[i] == pytest.approx(_crps_integral(mu[i : i + 1], sd[i : i + 1], y[i]), abs=1e-7)


def test_crps_mixture_exact_matches_quadrature_and_sampling() -> None:
    pred, y = _mixture(m=4, t=2, q=3, dy=1, seed=1)
    exact = crps(pred, y)  # [T]
    sd = pred.sample_variance.sqrt()
    for t in range(2):
        ref = np.mean(
            [_crps_integral(pred.sample_mean[:, t, q, 0].numpy(), sd[:, t, q, 0].numpy(), float(y[t, q, 0])) for q in range(3)]
        )
        assert float(exact[t]) == pytest.approx(ref, abs=1e-7)
    sampled = crps(pred, y, method="sample", n_samples=20000, generator=torch.Generator().manual_seed(0))
    # Monte Carlo error: per query the estimate averages |X - y| - |X - X'| / 2 over n = 20000
    # draws; |.| is 1-Lipschitz, so its sd is at most sd(X) (1 + sqrt(2) / 2) = 1.71 sd(X), with
    # sd(X) the mixture's predictive sd. Tolerance: 4 such standard errors of the largest query.
    se = 1.71 * float(pred.variance.sqrt().max()) / 20000**0.5
    torch.testing.assert_close(sampled, exact, atol=4 * se, rtol=0)
    # a one-member mixture uses the closed form
    one = GaussianPredictive(pred.sample_mean[:1], pred.sample_variance[:1])
    torch.testing.assert_close(
        crps(one, y), crps_gaussian(one.sample_mean[0], one.sample_variance[0], y).mean((-1, -2))
    )


def test_crps_of_flat_pair_and_point_limit() -> None:
    mean, y = torch.zeros(100, dtype=torch.float64), torch.linspace(-2, 2, 100, dtype=torch.float64)
    tiny = crps((mean, torch.full_like(mean, 1e-12)), y)
    assert tiny.shape == () and float(tiny) == pytest.approx(float((y - mean).abs().mean()), abs=1e-5)


def test_pit_of_draws_from_the_predictive_is_uniform() -> None:
    from scipy import stats
    pred, y = _mixture(m=5, t=20, q=100, dy=2, seed=3)
    u = pit(pred, y)
    assert u.shape == (20, 100, 2)
    ks = stats.kstest(u.reshape(-1).numpy(), "uniform")
    assert ks.pvalue > 0.01
    # the PIT error is small for calibrated draws, large for an overconfident predictive
    calibrated = float(pit_calibration_error(pred, y).mean())
    narrow = GaussianPredictive(pred.sample_mean, pred.sample_variance * 0.05)
    assert calibrated < 0.05 < float(pit_calibration_error(narrow, y).mean())
    assert stats.kstest(pit(narrow, y).reshape(-1).numpy(), "uniform").pvalue < 1e-6
    # PIT histogram is flat within sampling noise
    h = pit_histogram(pred, y, n_bins=10)
    assert int(h.sum()) == 4000 and stats.chisquare(h.numpy()).pvalue > 0.01


def test_pit_matches_scipy_cdf() -> None:
    from scipy import stats
    pred, y = _mixture(m=3, t=2, q=4, dy=1, seed=4)
    ref = stats.norm.cdf(y.numpy()[None], pred.sample_mean.numpy(), pred.sample_variance.sqrt().numpy()).mean(0)
    np.testing.assert_allclose(pit(pred, y).numpy(), ref, rtol=1e-12)


def test_pit_calibration_error_is_w1_to_uniform() -> None:
    from scipy import stats
    pred, y = _mixture(m=2, t=3, q=40, dy=1, seed=5)
    ours = pit_calibration_error(pred, y)
    grid = (np.arange(200000) + 0.5) / 200000
    u = pit(pred, y).numpy()
    for t in range(3):
        ref = stats.wasserstein_distance(u[t, :, 0], grid)
        assert float(ours[t]) == pytest.approx(ref, abs=1e-5)
    # masked = dropped
    mask = torch.arange(40).expand(3, 40) < torch.tensor([[40], [17], [1]])
    masked = pit_calibration_error(pred, y, mask=mask)
    for t in range(3):
        ref = stats.wasserstein_distance(u[t, mask[t].numpy(), 0], grid)
        assert float(masked[t]) == pytest.approx(ref, abs=1e-5)


def test_nll_matches_scipy_mixture_density() -> None:
    from scipy import stats
    pred, y = _mixture(m=3, t=2, q=5, dy=2, seed=6)
    comp = stats.norm.logpdf(y.numpy()[None], pred.sample_mean.numpy(), pred.sample_variance.sqrt().numpy()).sum(-1)
    ref = -(np.logaddexp.reduce(comp, axis=0) - np.log(3)).mean(-1)
    np.testing.assert_allclose(gaussian_nll(pred, y).numpy(), ref, rtol=1e-12)
    np.testing.assert_allclose(nll(pred, y).numpy(), ref, rtol=1e-12)
    torch.testing.assert_close(nll(pred, y), -pred.log_prob(y).mean(-1))


def test_mse_and_sharpness() -> None:
    pred, y = _mixture(m=4, t=3, q=6, dy=2, seed=7)
    torch.testing.assert_close(mse(pred, y), ((pred.mean - y) ** 2).mean((-1, -2)))
    torch.testing.assert_close(sharpness(pred), pred.stddev.mean((-1, -2)))
    flat = sharpness((torch.zeros(5), torch.full((5,), 4.0)))
    assert flat.shape == () and float(flat) == pytest.approx(2.0)


def test_coverage_equals_interval_membership() -> None:
    pred, y = _mixture(m=3, t=4, q=50, dy=1, seed=8)
    for level in (0.5, 0.9):
        lo, hi = pred.interval(level)
        inside = ((y >= lo) & (y <= hi)).double().mean((-1, -2))
        torch.testing.assert_close(coverage(pred, y, level), inside)
    cov = interval_coverage(pred, y, (0.5, 0.9))
    assert cov.shape == (4, 2)
    torch.testing.assert_close(cov[:, 1], coverage(pred, y, 0.9))
    nominal = torch.tensor([0.5, 0.9], dtype=torch.float64)
    torch.testing.assert_close(interval_coverage_error(pred, y, (0.5, 0.9)), (cov - nominal).abs().mean(-1))
    # calibrated draws: pooled coverage near nominal
    big, yb = _mixture(m=2, t=10, q=500, dy=1, seed=9)
    pooled = interval_coverage(big, yb, (0.5, 0.8, 0.95)).mean(0)
    torch.testing.assert_close(pooled, torch.tensor([0.5, 0.8, 0.95], dtype=torch.float64), atol=0.015, rtol=0)


def test_flat_one_dimensional_targets() -> None:
    from scipy import stats
    mean, var = torch.zeros(4), torch.ones(4)
    y = torch.tensor([0.0, 1.0, -1.0, 2.0])
    ref = -stats.norm.logpdf(y.numpy()).mean()
    assert float(nll((mean, var), y)) == pytest.approx(ref, rel=1e-6)
    assert nll((mean, var), y).shape == ()
    # a Dy = 1 predictive accepts [T, Q] targets
    pred = GaussianPredictive(mean.reshape(1, 2, 2, 1).double(), var.reshape(1, 2, 2, 1).double())
    torch.testing.assert_close(nll(pred, y.reshape(2, 2).double()), nll(pred, y.reshape(2, 2, 1).double()))
    assert math.isfinite(float(crps(pred, y.reshape(2, 2).double()).sum()))
