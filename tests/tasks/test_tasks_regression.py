"""Sinusoid and LinearGaussian task families; the exact predictive against independent routes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bayesmeta.exceptions import InvalidValueError, ShapeError
from bayesmeta.predictive import GaussianPredictive
from bayesmeta.tasks import LinearGaussian, Sinusoid, SupportSet, TaskBatch


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------- Sinusoid
def test_sinusoid_shapes_and_dtype() -> None:
    b = Sinusoid(k_shot=5, n_query=7).sample(3, gen(0))
    assert isinstance(b, TaskBatch) and b.n_way is None
    assert b.support_x.shape == (3, 5, 1) and b.support_y.shape == (3, 5, 1)
    assert b.query_x.shape == (3, 7, 1) and b.query_y.shape == (3, 7, 1)
    assert b.support_x.dtype == torch.float32
    b64 = Sinusoid(dtype=torch.float64).sample(2, gen(0))
    assert b64.query_y.dtype == torch.float64


def test_sinusoid_determinism_and_seeds_differ() -> None:
    s = Sinusoid(noise_std=0.3)
    a, b, c = s.sample(4, gen(1)), s.sample(4, gen(1)), s.sample(4, gen(2))
    for f in ("support_x", "support_y", "query_x", "query_y"):
        assert torch.equal(getattr(a, f), getattr(b, f))
    assert not torch.equal(a.support_y, c.support_y)


def test_sinusoid_recovered_amplitude_and_phase_in_range() -> None:
    # y = A sin(x - phi) = (A cos phi) sin x - (A sin phi) cos x: least squares recovers (A, phi)
    s = Sinusoid(k_shot=20, n_query=5, amplitude=(0.5, 3.0), phase=(0.2, 2.5), dtype=torch.float64)
    batch, params = s.sample_with_params(64, gen(3))
    x, y = batch.support_x[..., 0].numpy(), batch.support_y[..., 0].numpy()
    for t in range(64):
        design = np.stack([np.sin(x[t]), np.cos(x[t])], axis=1)
        (a, b), *_ = np.linalg.lstsq(design, y[t], rcond=None)
        amp, phase = math.hypot(a, b), math.atan2(-b, a)
        assert 0.5 <= amp <= 3.0 and 0.2 <= phase <= 2.5
        assert amp == pytest.approx(float(params.amplitude[t]), abs=1e-9)
        assert phase == pytest.approx(float(params.phase[t]), abs=1e-9)
    # the query targets are the same functions
    assert torch.allclose(params(batch.query_x), batch.query_y)


def test_sinusoid_inputs_in_range_and_out_of_range_queries() -> None:
    b = Sinusoid(k_shot=50, n_query=50, query_x_range=(5.0, 10.0)).sample(8, gen(4))
    assert float(b.support_x.min()) >= -5.0 and float(b.support_x.max()) <= 5.0
    assert float(b.query_x.min()) >= 5.0 and float(b.query_x.max()) <= 10.0
    assert float(b.support_y.abs().max()) <= 5.0


def test_sinusoid_noise_has_the_requested_std() -> None:
    s = Sinusoid(k_shot=200, n_query=1, noise_std=0.5, dtype=torch.float64)
    batch, params = s.sample_with_params(50, gen(5))
    resid = batch.support_y - params(batch.support_x)
    assert float(resid.std()) == pytest.approx(0.5, rel=0.05)


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"k_shot": 0}, "k_shot"),
        ({"n_query": -1}, "n_query"),
        ({"amplitude": (5.0, 1.0)}, "amplitude"),
        ({"noise_std": -0.1}, "noise_std"),
        ({"query_x_range": (1.0, float("nan"))}, "query_x_range"),
    ],
)
def test_sinusoid_bad_arguments(kwargs: dict, word: str) -> None:
    with pytest.raises(InvalidValueError, match=word):
        Sinusoid(**kwargs)


# ------------------------------------------------------------------------- LinearGaussian
def test_linear_gaussian_shapes_and_features() -> None:
    lg = LinearGaussian(in_features=2, k_shot=4, n_query=6)
    b, w = lg.sample_with_params(3, gen(0))
    assert b.support_x.shape == (3, 4, 2) and b.support_y.shape == (3, 4, 1)
    assert b.query_x.shape == (3, 6, 2) and b.query_y.shape == (3, 6, 1)
    assert w.shape == (3, 3) and lg.feature_dim == 3
    phi = lg.features(b.support_x)
    assert torch.equal(phi[..., :2], b.support_x) and torch.all(phi[..., 2] == 1)

    rff = LinearGaussian(in_features=1, n_features=64, feature_scale=0.7, seed=3)
    assert rff.features(torch.zeros(5, 1)).shape == (5, 64)
    # the feature map depends on the seed only, not on the task generator
    x = torch.linspace(-3, 3, 11).unsqueeze(-1)
    same = LinearGaussian(in_features=1, n_features=64, feature_scale=0.7, seed=3)
    other = LinearGaussian(in_features=1, n_features=64, feature_scale=0.7, seed=4)
    assert torch.equal(rff.features(x), same.features(x))
    assert not torch.allclose(rff.features(x), other.features(x))


def test_linear_gaussian_rff_kernel_approximates_rbf() -> None:
    lg = LinearGaussian(in_features=1, n_features=20000, feature_scale=0.8, seed=0, dtype=torch.float64)
    x = torch.linspace(-2, 2, 9, dtype=torch.float64).unsqueeze(-1)
    phi = lg.features(x)
    k = phi @ phi.T
    rbf = torch.exp(-((x - x.T) ** 2) / (2 * 0.8**2))
    assert torch.allclose(k, rbf, atol=0.05)


def test_linear_gaussian_targets_follow_the_model() -> None:
    lg = LinearGaussian(k_shot=100, n_query=100, noise_std=0.2, dtype=torch.float64)
    b, w = lg.sample_with_params(200, gen(1))
    resid = b.query_y - lg.evaluate(w, b.query_x)
    assert float(resid.std()) == pytest.approx(0.2, rel=0.03)
    assert float(w.std()) == pytest.approx(1.0, rel=0.1)
    b2, w2 = lg.sample_with_params(200, gen(1))
    assert torch.equal(b.support_y, b2.support_y) and torch.equal(w, w2)


def numpy_function_space_predictive(
    phi_s: np.ndarray, y: np.ndarray, phi_q: np.ndarray, prior_var: float, noise_var: float
) -> tuple[np.ndarray, np.ndarray]:
    """Kernel (function-space) form of the BLR predictive; independent of the weight-space code."""
    k_ss = prior_var * phi_s @ phi_s.T + noise_var * np.eye(len(y))
    k_qs = prior_var * phi_q @ phi_s.T
    k_qq = prior_var * np.einsum("qf,qf->q", phi_q, phi_q)
    mean = k_qs @ np.linalg.solve(k_ss, y)
    var = k_qq - np.einsum("qs,sq->q", k_qs, np.linalg.solve(k_ss, k_qs.T)) + noise_var
    return mean, var


@pytest.mark.parametrize("n_features", [None, 12])
def test_exact_predictive_matches_function_space_formula(n_features: int | None) -> None:
    lg = LinearGaussian(
        in_features=2, n_features=n_features, k_shot=7, n_query=5, prior_std=1.3, noise_std=0.4,
        dtype=torch.float64,
    )
    batch = lg.sample(6, gen(2))
    pred = lg.exact_predictive(batch.support, batch.query_x)
    assert isinstance(pred, GaussianPredictive)
    assert pred.sample_mean.shape == (1, 6, 5, 1) and pred.sample_mean.dtype == torch.float64
    for t in range(6):
        phi_s = lg.features(batch.support_x[t]).numpy()
        phi_q = lg.features(batch.query_x[t]).numpy()
        mean, var = numpy_function_space_predictive(
            phi_s, batch.support_y[t, :, 0].numpy(), phi_q, 1.3**2, 0.4**2
        )
        np.testing.assert_allclose(pred.mean[t, :, 0].numpy(), mean, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(pred.variance[t, :, 0].numpy(), var, rtol=1e-8, atol=1e-10)
    # without observation noise the variance drops by exactly noise_std^2
    f_pred = lg.exact_predictive(batch.support, batch.query_x, observation_noise=False)
    assert torch.allclose(pred.variance - f_pred.variance, torch.full_like(pred.variance, 0.16))


def test_exact_posterior_matches_normal_equations() -> None:
    lg = LinearGaussian(in_features=1, n_features=8, k_shot=10, prior_std=0.7, noise_std=0.3, dtype=torch.float64)
    batch = lg.sample(4, gen(3))
    mean, cov = lg.exact_posterior(batch.support)
    assert mean.shape == (4, 8) and cov.shape == (4, 8, 8)
    for t in range(4):
        phi = lg.features(batch.support_x[t]).numpy()
        y = batch.support_y[t, :, 0].numpy()
        precision = phi.T @ phi / 0.09 + np.eye(8) / 0.49
        np.testing.assert_allclose(cov[t].numpy(), np.linalg.inv(precision), rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(mean[t].numpy(), np.linalg.solve(precision, phi.T @ y / 0.09), rtol=1e-8)


def test_exact_predictive_matches_importance_sampling_from_the_prior() -> None:
    # Monte Carlo route: w ~ prior, weights = support likelihood; predictive moments of y*
    lg = LinearGaussian(
        in_features=1, k_shot=2, n_query=4, noise_std=0.8, x_range=(-1.5, 1.5), dtype=torch.float64
    )
    batch = lg.sample(2, gen(4))
    pred = lg.exact_predictive(batch.support, batch.query_x)
    n = 200_000
    g = gen(5)
    for t in range(2):
        w = torch.randn(n, 2, generator=g, dtype=torch.float64)
        phi_s, phi_q = lg.features(batch.support_x[t]), lg.features(batch.query_x[t])
        resid = batch.support_y[t, :, 0] - w @ phi_s.T  # [n, S]
        logw = -0.5 * (resid**2).sum(1) / 0.64
        weights = torch.softmax(logw, 0)
        ess = 1.0 / float((weights**2).sum())
        assert ess > 10_000  # else the tolerances below would be loose
        f = w @ phi_q.T  # [n, Q]
        mc_mean = (weights[:, None] * f).sum(0)
        mc_var = (weights[:, None] * (f - mc_mean) ** 2).sum(0) + 0.64
        f_var = pred.variance[t, :, 0] - 0.64
        # Monte Carlo standard errors: sd_f / sqrt(ess) for the mean, var_f sqrt(2 / ess) for the
        # variance; allow 5 of them
        assert torch.all((mc_mean - pred.mean[t, :, 0]).abs() < 5 * f_var.sqrt() / math.sqrt(ess))
        assert torch.all((mc_var - pred.variance[t, :, 0]).abs() < 5 * f_var * math.sqrt(2 / ess))


def test_mask_drops_points_exactly() -> None:
    lg = LinearGaussian(in_features=1, n_features=6, k_shot=8, n_query=3, dtype=torch.float64)
    batch = lg.sample(2, gen(6))
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[0, 5:] = False
    mask[1, :2] = False
    # garbage in the hidden slots must not matter
    y = batch.support_y.clone()
    y[~mask] = 1e3
    masked = SupportSet(batch.support_x, y, mask)
    p_masked = lg.exact_predictive(masked, batch.query_x)
    lml_masked = lg.log_marginal_likelihood(masked)
    for t in range(2):
        keep = mask[t]
        sub = SupportSet(batch.support_x[t : t + 1, keep], batch.support_y[t : t + 1, keep])
        p_sub = lg.exact_predictive(sub, batch.query_x[t : t + 1])
        assert torch.allclose(p_masked.mean[t], p_sub.mean[0])
        assert torch.allclose(p_masked.variance[t], p_sub.variance[0])
        assert torch.allclose(lml_masked[t], lg.log_marginal_likelihood(sub)[0])


def test_log_marginal_likelihood_matches_multivariate_normal() -> None:
    lg = LinearGaussian(in_features=2, n_features=5, k_shot=6, prior_std=0.9, noise_std=0.25, dtype=torch.float64)
    batch = lg.sample(3, gen(7))
    lml = lg.log_marginal_likelihood(batch.support)
    assert lml.shape == (3,)
    for t in range(3):
        phi = lg.features(batch.support_x[t]).numpy()
        cov = 0.81 * phi @ phi.T + 0.0625 * np.eye(6)
        y = batch.support_y[t, :, 0].numpy()
        ref = -0.5 * (6 * np.log(2 * np.pi) + np.linalg.slogdet(cov)[1] + y @ np.linalg.solve(cov, y))
        assert float(lml[t]) == pytest.approx(ref, rel=1e-9)


def test_float32_predictive_close_to_float64() -> None:
    lg = LinearGaussian(in_features=1, n_features=30, k_shot=20, noise_std=0.05)
    batch = lg.sample(4, gen(8))
    p32 = lg.exact_predictive(batch.support, batch.query_x)
    p64 = lg.exact_predictive(batch.to(dtype=torch.float64).support, batch.query_x.double())
    assert p32.mean.dtype == torch.float32
    assert torch.allclose(p32.mean.double(), p64.mean, atol=1e-4)


def test_linear_gaussian_errors() -> None:
    with pytest.raises(InvalidValueError, match="noise_std"):
        LinearGaussian(noise_std=0.0)
    with pytest.raises(InvalidValueError, match="prior_std"):
        LinearGaussian(prior_std=-1.0)
    lg = LinearGaussian(in_features=2)
    b = lg.sample(2, gen(0))
    with pytest.raises(ShapeError, match="query_x"):
        lg.exact_predictive(b.support, b.query_x[:1])
    with pytest.raises(ShapeError, match="D = 2"):
        lg.exact_predictive(SupportSet(b.support_x[..., :1], b.support_y), b.query_x)
    cls = SupportSet(b.support_x, torch.zeros(2, 10, dtype=torch.int64), n_way=2)
    with pytest.raises(ShapeError, match="regression"):
        lg.exact_posterior(cls)
