"""GP-sampled curves: layout, reproducibility, the kernel's statistics and the exact predictive."""

from __future__ import annotations

import math

import pytest
import torch

from bayesmeta.exceptions import BayesMetaError, InvalidValueError
from bayesmeta.tasks import SupportSet
from bayesmeta.tasks.gp_curves import GPCurveParams, GPCurves

F64 = torch.float64


def test_layout_and_variable_context_sizes() -> None:
    fam = GPCurves(min_context=3, max_context=12, n_target=9)
    batch, params = fam.sample_with_params(200, torch.Generator().manual_seed(0))
    assert batch.support_x.shape == batch.support_y.shape == (200, 12, 1)
    assert batch.query_x.shape == batch.query_y.shape == (200, 9, 1)
    assert batch.n_way is None and batch.support_x.dtype == torch.float32
    mask = batch.support_mask
    assert mask is not None
    sizes = mask.sum(1)
    assert int(sizes.min()) == 3 and int(sizes.max()) == 12  # both ends are reachable
    # present points come first: the mask is a prefix
    assert torch.equal(mask, torch.arange(12).unsqueeze(0) < sizes.unsqueeze(1))
    assert float(batch.support_x.min()) >= -2 and float(batch.support_x.max()) <= 2
    assert params.length_scale.shape == params.output_scale.shape == (200,)
    assert 0.1 <= float(params.length_scale.min()) and float(params.length_scale.max()) <= 0.6
    assert 0.1 <= float(params.output_scale.min()) and float(params.output_scale.max()) <= 1.0


def test_fixed_context_size_has_no_mask_and_grid_queries() -> None:
    fam = GPCurves(min_context=5, max_context=5, n_target=11, query_grid=True, dtype=F64)
    batch = fam.sample(3, torch.Generator().manual_seed(0))
    assert batch.support_mask is None and batch.support_x.dtype == F64
    grid = torch.linspace(-2, 2, 11, dtype=F64)
    for t in range(3):
        torch.testing.assert_close(batch.query_x[t, :, 0], grid)


def test_randomness_comes_only_from_the_generator() -> None:
    fam = GPCurves()
    state = torch.get_rng_state()
    a = fam.sample(4, torch.Generator().manual_seed(9))
    b = fam.sample(4, torch.Generator().manual_seed(9))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.support_y, b.support_y) and torch.equal(a.query_y, b.query_y)
    c = fam.sample(4, torch.Generator().manual_seed(10))
    assert not torch.equal(a.support_y, c.support_y)


def test_samples_have_the_rbf_covariance() -> None:
    """Fixed hyperparameters, grid inputs: empirical variance s^2 + noise^2 and correlation
    exp(-d^2 / 2 l^2) between grid points, over 4000 curves (tolerances ~5 standard errors)."""
    ell, s, noise = 0.5, 0.8, 0.05
    fam = GPCurves(1, 1, n_target=5, length_scale=ell, output_scale=s, noise_std=noise, query_grid=True, dtype=F64)
    y = fam.sample(4000, torch.Generator().manual_seed(0)).query_y[..., 0]  # [N, 5] on -2, -1, 0, 1, 2
    var = y.var(0)
    assert torch.allclose(var, torch.full_like(var, s**2 + noise**2), rtol=0.12)
    corr = torch.corrcoef(y.T)
    for d in (1, 2):
        expected = s**2 * math.exp(-0.5 * d**2 / ell**2) / (s**2 + noise**2)
        observed = torch.diagonal(corr, offset=d).mean()
        assert abs(float(observed) - expected) < 0.05, (d, float(observed), expected)
    assert abs(float(y.mean())) < 0.05


def test_exact_predictive_matches_a_hand_written_solve_and_ignores_masked_points() -> None:
    fam = GPCurves(min_context=2, max_context=8, n_target=6, dtype=F64)
    batch, params = fam.sample_with_params(5, torch.Generator().manual_seed(1))
    pred = fam.exact_predictive(batch.support, batch.query_x, params)
    assert pred.sample_mean.shape == (1, 5, 6, 1)
    for t in range(5):
        n = int(batch.support_mask[t].sum())
        sx, sy, qx = batch.support_x[t, :n, 0], batch.support_y[t, :n, 0], batch.query_x[t, :, 0]
        ls, os_ = float(params.length_scale[t]), float(params.output_scale[t])
        k = lambda a, b, ls=ls, os_=os_: os_**2 * torch.exp(-0.5 * (a[:, None] - b[None, :]) ** 2 / ls**2)  # noqa: E731
        kss = k(sx, sx) + (params.noise_std**2) * torch.eye(n, dtype=F64)
        mean = k(qx, sx) @ torch.linalg.solve(kss, sy)
        var = os_**2 + params.noise_std**2 - (k(qx, sx) @ torch.linalg.solve(kss, k(sx, qx))).diagonal()
        torch.testing.assert_close(pred.sample_mean[0, t, :, 0], mean, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(pred.sample_variance[0, t, :, 0], var, rtol=1e-5, atol=1e-6)


def test_exact_predictive_improves_with_context_size() -> None:
    fam = GPCurves(min_context=40, max_context=40, n_target=50, dtype=F64)
    batch, params = fam.sample_with_params(64, torch.Generator().manual_seed(2))
    lls = []
    for k in (3, 10, 40):
        mask = torch.zeros(64, 40, dtype=torch.bool)
        mask[:, :k] = True
        support = SupportSet(batch.support_x, batch.support_y, mask)
        lls.append(float(fam.exact_predictive(support, batch.query_x, params).log_prob(batch.query_y).mean()))
    assert lls[0] < lls[1] < lls[2], lls


def test_bad_configuration_is_named() -> None:
    with pytest.raises(InvalidValueError, match="min_context"):
        GPCurves(min_context=10, max_context=5)
    with pytest.raises(InvalidValueError, match="min_context"):
        GPCurves(min_context=0)
    with pytest.raises(InvalidValueError, match="length_scale"):
        GPCurves(length_scale=(0.0, 0.5))
    with pytest.raises(InvalidValueError, match="output_scale"):
        GPCurves(output_scale=(1.0, 0.5))
    with pytest.raises(InvalidValueError, match="noise_std"):
        GPCurves(noise_std=-0.1)
    with pytest.raises(BayesMetaError, match="n_tasks"):
        GPCurves().sample(0)
    fam = GPCurves(dtype=F64)
    batch, params = fam.sample_with_params(2)
    with pytest.raises(BayesMetaError, match="query_x"):
        fam.exact_predictive(batch.support, batch.query_x[:1], params)
    assert isinstance(params, GPCurveParams)
