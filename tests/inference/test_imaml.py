"""iMAML's implicit meta-gradient against the closed form on a linear-Gaussian (quadratic) inner problem."""

from __future__ import annotations

import pytest
import torch

from bayesmeta.exceptions import ConfigError
from bayesmeta.inference import IMAML
from bayesmeta.inference.imaml import conjugate_gradient
from bayesmeta.models import MLP
from bayesmeta.tasks import TaskBatch

D, T, S, Q = 3, 4, 6, 5


def _linear_batch(seed: int = 0) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(T, D, 1, generator=g, dtype=torch.float64)
    sx = torch.rand(T, S, D, generator=g, dtype=torch.float64) * 2 - 1
    qx = torch.rand(T, Q, D, generator=g, dtype=torch.float64) * 2 - 1
    noise = lambda n: 0.1 * torch.randn(T, n, 1, generator=g, dtype=torch.float64)  # noqa: E731
    return TaskBatch(sx, sx @ w + noise(S), qx, qx @ w + noise(Q))


def _closed_form(theta: torch.Tensor, batch: TaskBatch, reg: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact inner solutions and the exact implicit meta-gradient in the stacked [w; b] parameters.

    Support loss L_t(phi) = 1/S ||X_t phi - y_t||^2 with X_t = [x, 1]: H_t = 2/S X_t^T X_t, and
    phi_t* = (H_t + reg I)^{-1} (reg theta + 2/S X_t^T y_t), d phi_t*/d theta = reg (H_t + reg I)^{-1}.
    The pooled query loss 1/(T Q) sum_t ||Xq_t phi_t - yq_t||^2 has gradient 2/(T Q) Xq_t^T r_t.
    """
    ones = lambda n: torch.ones(T, n, 1, dtype=torch.float64)  # noqa: E731
    xs = torch.cat([batch.support_x, ones(S)], -1)
    xq = torch.cat([batch.query_x, ones(Q)], -1)
    eye = torch.eye(D + 1, dtype=torch.float64)
    h = 2.0 / S * xs.mT @ xs  # [T, D+1, D+1]
    phi = torch.linalg.solve(h + reg * eye, reg * theta + 2.0 / S * xs.mT @ batch.support_y)  # [T, D+1, 1]
    gq = 2.0 / (T * Q) * xq.mT @ (xq @ phi - batch.query_y)
    meta = (reg * torch.linalg.solve(h + reg * eye, gq)).sum(0)
    return phi, meta


@pytest.mark.parametrize("reg", [0.5, 2.0])
def test_meta_gradient_equals_the_analytic_implicit_gradient(reg: float) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(D, 1).double()
    # Gradient descent on the (reg-strongly convex) inner problem contracts the error by at most
    # 1 - inner_lr * reg <= 0.95 per step (0.95^1500 ~ 1e-33) and is stable while
    # inner_lr * (reg + max eig H) < 2, with max eig H <= 2 max ||[x, 1]||^2 = 8.
    # CG on D + 1 = 4 unknowns is exact after 4 iterations (8 for slack).
    learner = IMAML(model, inner_lr=0.1, inner_steps=1500, reg=reg, cg_steps=8, task_kind="regression", noise=1.0)
    batch = _linear_batch()
    theta = torch.cat([model.weight.detach().T, model.bias.detach()[:, None]], 0)  # [D+1, 1]
    phi_exact, meta_exact = _closed_form(theta, batch, reg)
    with torch.no_grad():
        post = learner.adapt(batch.support)
    phi = torch.cat([post.params["weight"].mT, post.params["bias"][:, :, None]], 1)
    torch.testing.assert_close(phi, phi_exact, rtol=0, atol=1e-12)
    out = learner.meta_loss(batch)
    out.loss.backward()
    grad = torch.cat([model.weight.grad.T, model.bias.grad[:, None]], 0)
    # float64 round-off through a few hundred flops: 1e-10 relative is ~1e4 ulps of slack
    torch.testing.assert_close(grad, meta_exact, rtol=1e-10, atol=1e-12)
    assert out.metrics["cg_residual"] < 1e-10
    # the loss's value is the query loss at phi
    q = ((torch.cat([batch.query_x, torch.ones(T, Q, 1, dtype=torch.float64)], -1) @ phi_exact - batch.query_y) ** 2).mean()
    torch.testing.assert_close(torch.tensor(out.metrics["query_loss"], dtype=torch.float64), q, rtol=1e-10, atol=0)


def test_conjugate_gradient_solves_batched_spd_systems() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 5, 5, generator=g, dtype=torch.float64)
    a = a @ a.mT + 0.5 * torch.eye(5, dtype=torch.float64)
    b = torch.randn(3, 5, generator=g, dtype=torch.float64)
    x = conjugate_gradient(lambda v: {"v": (a @ v["v"][..., None])[..., 0]}, {"v": b}, steps=25)
    torch.testing.assert_close(x["v"], torch.linalg.solve(a, b), rtol=1e-9, atol=1e-10)


def test_meta_gradient_equals_explicit_hessian_solves_on_a_network() -> None:
    """A non-quadratic inner problem: CG on HVPs against per-task dense Hessians from torch.func.hessian."""
    torch.manual_seed(0)
    model = MLP(1, 1, hidden=(4,)).double()
    reg = 2.0
    learner = IMAML(model, inner_lr=0.05, inner_steps=3, reg=reg, cg_steps=40, task_kind="regression", noise=1.0)
    g = torch.Generator().manual_seed(2)
    batch = TaskBatch(*(torch.randn(3, 5, 1, generator=g, dtype=torch.float64) for _ in range(4)))
    grads, _, _, metrics = learner.implicit_gradient(batch)
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    with torch.no_grad():
        post = learner.adapt(batch.support)
    def unflat(v: torch.Tensor) -> dict[str, torch.Tensor]:
        return {n: c.reshape(sh) for n, c, sh in zip(names, v.split(sizes), shapes)}
    def support_loss(v: torch.Tensor, t: int) -> torch.Tensor:
        out = torch.func.functional_call(model, unflat(v), (batch.support_x[t],))
        return ((out - batch.support_y[t]) ** 2).mean()
    def query_loss(v: torch.Tensor, t: int) -> torch.Tensor:
        out = torch.func.functional_call(model, unflat(v), (batch.query_x[t],))
        return ((out - batch.query_y[t]) ** 2).sum() / (batch.n_tasks * 5)
    total = torch.zeros(sum(sizes), dtype=torch.float64)
    for t in range(batch.n_tasks):
        phi = torch.cat([post.params[n][t].flatten() for n in names])
        h = torch.func.hessian(support_loss)(phi, t)
        gq = torch.func.grad(query_loss)(phi, t)
        total += torch.linalg.solve(torch.eye(len(phi), dtype=torch.float64) + h / reg, gq)
    expected = unflat(total)
    # I + H / reg is 13 x 13 here and well conditioned: 40 CG iterations converge to round-off
    assert metrics["cg_residual"] < 1e-9
    for n in names:
        torch.testing.assert_close(grads[n], expected[n], rtol=1e-7, atol=1e-10)


def test_unstable_proximal_steps_are_refused() -> None:
    with pytest.raises(ConfigError, match="inner_lr \\* reg"):
        IMAML(MLP(1, 1, hidden=(8,)), inner_lr=0.01, reg=1e3)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"reg": 0.0}, "reg"), ({"cg_steps": 0}, "cg_steps"), ({"inner_steps": 0}, "inner_steps"), ({"noise": -1.0}, "noise")],
)
def test_bad_options_are_config_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        IMAML(MLP(1, 1, hidden=(8,)), **kwargs)
