"""ALPaCA's posterior predictive against the closed form computed by hand (float64)."""

from __future__ import annotations

import math

import pytest
import torch

from bayesmeta.exceptions import ConfigError, ShapeError
from bayesmeta.inference import ALPaCA
from bayesmeta.models import MLP
from bayesmeta.tasks import TaskBatch

T, S, Q, DY = 3, 7, 4, 2
# Both routes are exact float64 linear algebra on ~10 x 10 well-conditioned systems: agreement to
# ~1e-13 is expected; 1e-9 leaves room for the conditioning of the learned (random) prior.
TOL = 1e-9


def _batch(seed: int = 0, masked: bool = False) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    sx = torch.randn(T, S, 2, generator=g, dtype=torch.float64)
    qx = torch.randn(T, Q, 2, generator=g, dtype=torch.float64)
    sy = torch.randn(T, S, DY, generator=g, dtype=torch.float64)
    qy = torch.randn(T, Q, DY, generator=g, dtype=torch.float64)
    mask = None
    if masked:
        mask = torch.ones(T, S, dtype=torch.bool)
        mask[0, 5:] = False
        mask[2, 2:] = False
        sx = torch.where(mask[..., None], sx, torch.full_like(sx, 1e6))  # garbage in padded slots
    return TaskBatch(sx, sy, qx, qy, support_mask=mask)


def _learner() -> ALPaCA:
    torch.manual_seed(0)
    learner = ALPaCA(MLP(2, None, hidden=(5, 5), activation=torch.nn.Tanh), y_dim=DY).double()
    with torch.no_grad():  # a non-trivial learned prior
        learner.prior_mean.normal_()
        learner.prior_chol_offdiag.normal_(std=0.3)
        learner.prior_chol_log_diag.uniform_(-0.5, 0.5)
        learner.log_noise.copy_(torch.tensor([-0.3, 0.2]))
    return learner


def _hand(learner: ALPaCA, batch: TaskBatch, detach: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Normal equations per task, in a Python loop, with explicit inverses."""
    d = (lambda t: t.detach()) if detach else (lambda t: t)  # noqa: E731
    l0 = torch.tril(d(learner.prior_chol_offdiag), -1) + torch.diag(d(learner.prior_chol_log_diag).exp())
    lam0, k0 = l0 @ l0.T, d(learner.prior_mean)
    sig2 = d(learner.log_noise).exp() ** 2
    feats = lambda x: torch.cat([learner.backbone.features(x), torch.ones(len(x), 1, dtype=x.dtype)], 1)  # noqa: E731
    means, variances = [], []
    for t in range(T):
        keep = slice(None) if batch.support_mask is None else batch.support_mask[t]
        phi, y = feats(batch.support_x[t][keep]), batch.support_y[t][keep]
        cov = torch.linalg.inv(lam0 + phi.T @ phi)
        kn = cov @ (lam0 @ k0 + phi.T @ y)
        pq = feats(batch.query_x[t])
        means.append(pq @ kn)
        variances.append((1 + torch.einsum("qd,de,qe->q", pq, cov, pq))[:, None] * sig2)
    return torch.stack(means), torch.stack(variances)


def _function_space(learner: ALPaCA, batch: TaskBatch, t: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Second route: condition the joint Gaussian of (support y, query y) for one output at a time."""
    l0 = torch.tril(learner.prior_chol_offdiag.detach(), -1) + torch.diag(learner.prior_chol_log_diag.detach().exp())
    prior_cov = torch.linalg.inv(l0 @ l0.T)
    feats = lambda x: torch.cat([learner.backbone.features(x), torch.ones(len(x), 1, dtype=x.dtype)], 1)  # noqa: E731
    ps, pq = feats(batch.support_x[t]), feats(batch.query_x[t])
    sig2 = learner.log_noise.detach().exp() ** 2
    means, variances = [], []
    for j in range(DY):
        k0 = learner.prior_mean.detach()[:, j]
        kss = sig2[j] * (ps @ prior_cov @ ps.T + torch.eye(S, dtype=torch.float64))
        kqs = sig2[j] * pq @ prior_cov @ ps.T
        kqq = sig2[j] * (pq @ prior_cov @ pq.T + torch.eye(Q, dtype=torch.float64))
        sol = torch.linalg.solve(kss, batch.support_y[t][:, j] - ps @ k0)
        means.append(pq @ k0 + kqs @ sol)
        variances.append(torch.diagonal(kqq - kqs @ torch.linalg.solve(kss, kqs.T)))
    return torch.stack(means, -1), torch.stack(variances, -1)


@pytest.mark.parametrize("masked", [False, True])
def test_predictive_equals_the_normal_equations(masked: bool) -> None:
    learner, batch = _learner(), _batch(masked=masked)
    with torch.no_grad():
        pred = learner.predict(learner.adapt(batch.support), batch.query_x)
        mean, var = _hand(learner, batch)
    torch.testing.assert_close(pred.mean, mean, rtol=TOL, atol=TOL)
    torch.testing.assert_close(pred.variance, var, rtol=TOL, atol=TOL)


def test_predictive_equals_gaussian_conditioning_in_function_space() -> None:
    learner, batch = _learner(), _batch()
    with torch.no_grad():
        pred = learner.predict(learner.adapt(batch.support), batch.query_x)
        for t in range(T):
            mean, var = _function_space(learner, batch, t)
            torch.testing.assert_close(pred.mean[t], mean, rtol=TOL, atol=TOL)
            torch.testing.assert_close(pred.variance[t], var, rtol=TOL, atol=TOL)


def test_meta_loss_and_its_gradient_equal_the_hand_route() -> None:
    """Value and gradient (every meta-parameter, backbone included) against autograd through _hand."""
    learner, batch = _learner(), _batch()
    out = learner.meta_loss(batch)
    mean, var = _hand(learner, batch, detach=False)
    nll = 0.5 * (math.log(2 * math.pi) + var.log() + (batch.query_y - mean) ** 2 / var).mean()
    torch.testing.assert_close(out.loss, nll, rtol=TOL, atol=0)
    params = list(learner.parameters())
    for a, b in zip(torch.autograd.grad(out.loss, params), torch.autograd.grad(nll, params)):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-11)


def test_no_support_gives_the_prior_predictive() -> None:
    """With every support point masked out, the posterior is the prior: mean phi^T K0, variance sigma^2 (1 + phi^T Lambda0^-1 phi)."""
    learner, batch = _learner(), _batch()
    mask = torch.zeros(T, S, dtype=torch.bool)
    mask[:, 0] = True  # TaskBatch refuses an empty support set; keep one point and compare with S = 1
    one = TaskBatch(batch.support_x, batch.support_y, batch.query_x, batch.query_y, support_mask=mask)
    single = TaskBatch(batch.support_x[:, :1], batch.support_y[:, :1], batch.query_x, batch.query_y)
    with torch.no_grad():
        a = learner(one)
        b = learner(single)
    torch.testing.assert_close(a.mean, b.mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(a.variance, b.variance, rtol=1e-12, atol=1e-12)


def test_bad_options_and_shapes() -> None:
    with pytest.raises(ConfigError, match="feature_dim"):
        ALPaCA(torch.nn.Linear(2, 3))
    with pytest.raises(ConfigError, match="prior_precision"):
        ALPaCA(MLP(2, None, hidden=(4,)), prior_precision=0.0)
    with pytest.raises(ConfigError, match="noise_init"):
        ALPaCA(MLP(2, None, hidden=(4,)), noise_init=-1.0)
    learner = ALPaCA(MLP(2, None, hidden=(4,)), y_dim=3)
    with pytest.raises(ShapeError, match="y_dim"):
        learner.meta_loss(_batch().to(dtype=torch.float32))
