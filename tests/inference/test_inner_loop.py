"""The one batched inner loop (bayesmeta.inference.inner_loop): semantics that every learner relies on.

Meta-gradients against `higher`, finite differences and per-task autograd loops are in
test_maml_gradients.py; here: padding, chunking, evaluation mode and the vmap route agree with
the hand-batched route, each against an independent computation.
"""

from __future__ import annotations

import torch
from torch.func import functional_call

from bayesmeta.inference.inner_loop import (
    as_batched,
    batched_gradient_steps,
    gradient_steps,
    squared_error_loss,
    stacked_gradient_steps,
)
from bayesmeta.models import MLP

F64 = torch.float64


def _problem(t: int = 4, s: int = 6, seed: int = 0):
    torch.manual_seed(seed)
    model = MLP(2, 1, hidden=(5,)).double()
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(t, s, 2, generator=g, dtype=F64)
    y = torch.randn(t, s, 1, generator=g, dtype=F64)

    def loss(p, xx, yy, m):  # a per-task loss with no batched form: the vmap route
        return squared_error_loss(functional_call(model, p, (xx,)), yy, m)

    return model, dict(model.named_parameters()), x, y, loss


def _manual_steps(model, theta, x, y, mask, steps, lr):
    """Plain per-task autograd loop on the points where mask is True (padding dropped)."""
    out = []
    for t in range(x.shape[0]):
        keep = mask[t]
        p = {k: v.detach().clone().requires_grad_(True) for k, v in theta.items()}
        for _ in range(steps):
            pred = functional_call(model, p, (x[t][keep],))
            g = torch.autograd.grad(((pred - y[t][keep]) ** 2).mean(), list(p.values()))
            p = {k: (v - lr * gi).detach().requires_grad_(True) for (k, v), gi in zip(p.items(), g)}
        out.append(p)
    return {k: torch.stack([o[k] for o in out]).detach() for k in theta}


def test_padding_equals_dropping_the_padded_points() -> None:
    model, theta, x, y, loss = _problem()
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[1, 4:] = False
    mask[3, 1] = False
    x = x.clone()
    x[~mask] = 1e3  # padded values must not matter at all
    got = batched_gradient_steps(loss, theta, x, y, mask, 3, 0.1)
    ref = _manual_steps(model, theta, x, y, mask, 3, 0.1)
    for k in theta:
        torch.testing.assert_close(got[k].detach(), ref[k], rtol=1e-12, atol=1e-12)


def test_no_mask_equals_an_all_true_mask() -> None:
    _, theta, x, y, loss = _problem(seed=1)
    a = batched_gradient_steps(loss, theta, x, y, None, 2, 0.1)
    b = batched_gradient_steps(loss, theta, x, y, torch.ones(4, 6, dtype=torch.bool), 2, 0.1)
    for k in theta:
        torch.testing.assert_close(a[k], b[k], rtol=1e-13, atol=1e-14)


def test_chunks_equal_one_batch_and_single_task_steps() -> None:
    _, theta, x, y, loss = _problem(t=5, seed=2)
    whole = batched_gradient_steps(loss, theta, x, y, None, 2, 0.1)
    chunked = batched_gradient_steps(loss, theta, x, y, None, 2, 0.1, chunk_size=2)
    for k in theta:
        torch.testing.assert_close(chunked[k], whole[k], rtol=0, atol=1e-14)
    for t in range(5):
        one = gradient_steps(loss, theta, x[t], y[t], torch.ones(6, dtype=torch.bool), 2, 0.1)
        for k in theta:
            torch.testing.assert_close(one[k], whole[k][t], rtol=0, atol=1e-14)


def test_stacked_starts_are_per_task() -> None:
    _, theta, x, y, loss = _problem(seed=3)
    g = torch.Generator().manual_seed(9)
    starts = {k: v.detach() + 0.1 * torch.randn(4, *v.shape, generator=g, dtype=F64) for k, v in theta.items()}
    got = stacked_gradient_steps(loss, starts, x, y, None, 2, 0.1)
    for t in range(4):
        one = gradient_steps(loss, {k: v[t] for k, v in starts.items()}, x[t], y[t], None, 2, 0.1)
        for k in theta:
            torch.testing.assert_close(got[k][t], one[k], rtol=0, atol=1e-14)


def test_no_grad_evaluation_returns_detached_parameters_with_the_same_values() -> None:
    _, theta, x, y, loss = _problem(seed=4)
    with_graph = batched_gradient_steps(loss, theta, x, y, None, 2, 0.1)
    assert all(v.requires_grad for v in with_graph.values())
    with torch.no_grad():
        evaluated = batched_gradient_steps(loss, theta, x, y, None, 2, 0.1)
    for k in theta:
        assert not evaluated[k].requires_grad
        torch.testing.assert_close(evaluated[k], with_graph[k].detach(), rtol=0, atol=1e-15)


def test_first_order_has_identity_jacobian_and_the_batched_route_matches_vmap() -> None:
    model, theta, x, y, loss = _problem(seed=5)
    fo = batched_gradient_steps(loss, theta, x, y, None, 1, 0.1, first_order=True)
    (g,) = torch.autograd.grad(fo["body.0.weight"].sum(), [theta["body.0.weight"]])
    torch.testing.assert_close(g, torch.full_like(g, 4.0))  # T = 4 tasks, d phi_t / d theta = I
    # the learners' loss has a hand-batched form; it must give the vmap route's steps
    from bayesmeta.inference import MAML

    learner = MAML(model, inner_lr=0.1, task_kind="regression", noise=1.0)
    fast = learner.support_loss(False)
    assert getattr(fast, "batched", None) is not None and as_batched(loss) is not fast.batched
    a = batched_gradient_steps(fast, theta, x, y, None, 2, 0.1)
    b = batched_gradient_steps(loss, theta, x, y, None, 2, 0.1)
    for k in theta:
        torch.testing.assert_close(a[k], b[k], rtol=1e-12, atol=1e-13)
