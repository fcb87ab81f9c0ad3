"""Reference posteriors for LinearGaussian: NUTS against the closed form, and the scores."""

from __future__ import annotations

import math

import pytest
import torch

from bayesmeta.diagnostics.reference import (
    NUTSPosterior,
    exact_reference,
    gaussian_kl,
    gaussian_w2,
    nuts_posterior,
    score_against_reference,
)
from bayesmeta.exceptions import InvalidValueError, ShapeError
from bayesmeta.predictive import GaussianPredictive
from bayesmeta.tasks import LinearGaussian, Sinusoid, TaskBatch

F64 = torch.float64
FAMILY = LinearGaussian(k_shot=3, n_query=6, noise_std=0.5, prior_std=1.0, dtype=F64)


@pytest.fixture(scope="module")
def batch() -> TaskBatch:
    b = FAMILY.sample(2, torch.Generator().manual_seed(0))
    # the second task sees only 2 of its 3 points: the mask must reach the likelihood
    mask = torch.tensor([[True, True, True], [True, True, False]])
    return TaskBatch(b.support_x, b.support_y, b.query_x, b.query_y, support_mask=mask)


@pytest.fixture(scope="module")
def nuts(batch: TaskBatch) -> NUTSPosterior:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return nuts_posterior(FAMILY, batch, num_samples=500, warmup=300, seed=0)
    finally:
        torch.set_num_threads(n)


def test_nuts_moments_agree_with_the_closed_form(batch: TaskBatch, nuts: NUTSPosterior) -> None:
    mean, cov = FAMILY.exact_posterior(batch.support)
    assert nuts.weights.shape == (500, 2, 2) and nuts.divergences == 0
    assert bool((nuts.ess > 100).all()), nuts.ess
    sd = torch.diagonal(cov, dim1=-2, dim2=-1).sqrt()  # [T, F]
    # 4 Monte Carlo standard errors, using the chain's own effective sample size
    assert ((nuts.mean - mean).abs() < 4 * sd / nuts.ess.sqrt()).all()
    var_err = (torch.diagonal(nuts.covariance, dim1=-2, dim2=-1) / sd**2 - 1).abs()
    assert (var_err < 4 * (2 / nuts.ess).sqrt()).all(), var_err
    # correlations (the tasks' posteriors are strongly correlated in (slope, bias))
    corr = lambda c: c[:, 0, 1] / (c[:, 0, 0] * c[:, 1, 1]).sqrt()  # noqa: E731
    assert ((corr(nuts.covariance) - corr(cov)).abs() < 4 / nuts.ess.min().sqrt()).all()


def test_nuts_predictive_scores_close_to_the_exact_one(batch: TaskBatch, nuts: NUTSPosterior) -> None:
    exact = exact_reference(FAMILY, batch, batch.query_x)
    pred = nuts.predictive(batch.query_x)
    assert pred.n_samples == 500 and pred.batch_shape == (2, 6)
    sc = score_against_reference(pred, exact)
    assert set(sc) == {"kl", "w2", "var_ratio"} and sc["kl"].shape == (2, 6)
    assert float(sc["kl"].max()) < 0.02 and float((sc["var_ratio"] - 1).abs().max()) < 0.2
    # a predictive that ignores the data is far away by the same yardstick
    prior_pred = GaussianPredictive(torch.zeros(2, 6, 1, dtype=F64), torch.full((2, 6, 1), 1.0 + 0.25, dtype=F64))
    far = score_against_reference(prior_pred, exact)
    assert float(far["kl"].mean()) > 20 * float(sc["kl"].mean())


def test_nuts_leaves_the_global_rng_alone() -> None:
    b = FAMILY.sample(1, torch.Generator().manual_seed(1))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    post = nuts_posterior(FAMILY, b.support, num_samples=20, warmup=20, seed=5)
    assert torch.equal(torch.rand(3), expected)
    again = nuts_posterior(FAMILY, b.support, num_samples=20, warmup=20, seed=5)
    assert torch.equal(post.weights, again.weights)


def test_exact_reference_matches_normal_equations_solved_by_hand(batch: TaskBatch) -> None:
    """Bayesian linear regression on phi(x) = [x / feature_scale, 1], solved with numpy from the
    present support rows only: precision A = Phi^T Phi / s^2 + I / p^2, mean A^-1 Phi^T y / s^2,
    predictive N(phi_q^T mean, phi_q^T A^-1 phi_q + s^2)."""
    import numpy as np

    a = exact_reference(FAMILY, batch, batch.query_x)
    latent = exact_reference(FAMILY, batch, batch.query_x, observation_noise=False)
    s2, p2 = FAMILY.noise_std**2, FAMILY.prior_std**2
    phi = lambda x: np.concatenate([x / FAMILY.feature_scale, np.ones((x.shape[0], 1))], 1)  # noqa: E731
    for t in range(batch.n_tasks):
        keep = batch.support_mask[t].numpy()
        ps, y = phi(batch.support_x[t].numpy()[keep]), batch.support_y[t].numpy()[keep]
        prec = ps.T @ ps / s2 + np.eye(2) / p2
        mean = np.linalg.solve(prec, ps.T @ y / s2)
        pq = phi(batch.query_x[t].numpy())
        var = np.einsum("qi,ij,qj->q", pq, np.linalg.inv(prec), pq)
        np.testing.assert_allclose(a.mean[t].numpy(), pq @ mean, rtol=1e-10, atol=1e-12)  # float64 solves
        np.testing.assert_allclose(a.variance[t, :, 0].numpy(), var + s2, rtol=1e-10)
        np.testing.assert_allclose(latent.variance[t, :, 0].numpy(), var, rtol=1e-10)


def test_scores_are_the_closed_forms() -> None:
    g = torch.Generator().manual_seed(2)
    m1, m2 = torch.randn(3, 4, 2, generator=g, dtype=F64), torch.randn(3, 4, 2, generator=g, dtype=F64)
    v1, v2 = torch.rand(3, 4, 2, generator=g, dtype=F64) + 0.1, torch.rand(3, 4, 2, generator=g, dtype=F64) + 0.1
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(m1, v1.sqrt()), torch.distributions.Normal(m2, v2.sqrt()))
    torch.testing.assert_close(gaussian_kl(m1, v1, m2, v2), ref)
    sc = score_against_reference(GaussianPredictive(m2, v2), GaussianPredictive(m1, v1))
    torch.testing.assert_close(sc["kl"], ref.sum(-1))
    torch.testing.assert_close(sc["w2"] ** 2, ((m1 - m2) ** 2 + (v1.sqrt() - v2.sqrt()) ** 2).sum(-1))
    torch.testing.assert_close(gaussian_w2(m1, v1, m1, v1), torch.zeros_like(m1))
    same = score_against_reference(GaussianPredictive(m1, v1), GaussianPredictive(m1, v1))
    assert float(same["kl"].abs().max()) < 1e-12 and float(same["w2"].max()) < 1e-12


def test_mixtures_are_moment_matched() -> None:
    g = torch.Generator().manual_seed(3)
    mix = GaussianPredictive(torch.randn(5, 2, 3, 1, generator=g, dtype=F64), torch.rand(5, 2, 3, 1, generator=g, dtype=F64) + 0.1)
    matched = GaussianPredictive(mix.mean.unsqueeze(0), mix.variance.unsqueeze(0))
    sc = score_against_reference(mix, matched)
    assert float(sc["kl"].abs().max()) < 1e-12
    assert math.isclose(float(sc["var_ratio"].mean()), 1.0, rel_tol=1e-12)


def test_bad_inputs_raise(batch: TaskBatch) -> None:
    a = GaussianPredictive(torch.zeros(2, 6, 1), torch.ones(2, 6, 1))
    with pytest.raises(ShapeError, match="reference"):
        score_against_reference(a, GaussianPredictive(torch.zeros(2, 5, 1), torch.ones(2, 5, 1)))
    with pytest.raises(ShapeError, match="predictive"):
        score_against_reference("a", a)  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError, match="family"):
        nuts_posterior(Sinusoid(), batch)  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError, match="num_samples"):
        nuts_posterior(FAMILY, batch, num_samples=0)
    with pytest.raises(ShapeError, match="support"):
        nuts_posterior(FAMILY, batch.support_x)  # type: ignore[arg-type]
    post = NUTSPosterior(FAMILY, torch.zeros(3, 2, 2, dtype=F64), torch.ones(2, 2), 0)
    with pytest.raises(ShapeError, match="query_x"):
        post.predictive(torch.zeros(3, 4, 1))
