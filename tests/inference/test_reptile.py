"""Reptile's meta-gradient is theta - mean_t phi_t,K, checked against a hand-written per-task SGD loop."""

from __future__ import annotations

import copy

import pytest
import torch

from bayesmeta.exceptions import ConfigError
from bayesmeta.inference import MAML, Reptile
from bayesmeta.models import MLP, Conv4
from bayesmeta.tasks import TaskBatch

# Both routes are the same float64 arithmetic in a different order (vmap vs a Python loop over
# tasks, torch.func.grad vs nn.Module + autograd): agreement to ~1e-14 relative is expected.
RTOL = 1e-10


def _sine_batch(t: int = 4, s: int = 8, q: int = 5, seed: int = 0) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    x = lambda n: torch.rand(t, n, 1, generator=g, dtype=torch.float64) * 10 - 5  # noqa: E731
    sx, qx = x(s), x(q)
    amp = torch.rand(t, 1, 1, generator=g, dtype=torch.float64) * 4.9 + 0.1
    return TaskBatch(sx, amp * torch.sin(sx), qx, amp * torch.sin(qx))


def _loop_phi(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float, steps: int, cls: bool) -> list[torch.Tensor]:
    """K plain SGD steps on one task with a deep copy of the module: phi_K."""
    m = copy.deepcopy(model)
    opt = torch.optim.SGD(m.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        out = m(x)
        loss = torch.nn.functional.cross_entropy(out, y) if cls else ((out - y) ** 2).mean()
        loss.backward()
        opt.step()
    return [p.detach() for p in m.parameters()]


@pytest.mark.parametrize("steps", [1, 3])
def test_meta_gradient_is_theta_minus_mean_adapted_regression(steps: int) -> None:
    torch.manual_seed(0)
    learner = Reptile(MLP(1, 1, hidden=(16, 16)), inner_lr=0.02, inner_steps=steps, task_kind="regression", noise=1.0).double()
    batch = _sine_batch()
    learner.meta_loss(batch).loss.backward()
    theta = [p.detach() for p in learner.model.parameters()]
    phis = [_loop_phi(learner.model, batch.support_x[t], batch.support_y[t], 0.02, steps, False) for t in range(batch.n_tasks)]
    for i, (name, p) in enumerate(learner.model.named_parameters()):
        expected = theta[i] - torch.stack([ph[i] for ph in phis]).mean(0)
        torch.testing.assert_close(p.grad, expected, rtol=RTOL, atol=1e-13, msg=name)


def test_meta_gradient_is_theta_minus_mean_adapted_classification() -> None:
    torch.manual_seed(0)
    learner = Reptile(Conv4(out_features=3, hidden=4, norm="group"), inner_lr=0.1, inner_steps=2, task_kind="classification").double()
    g = torch.Generator().manual_seed(1)
    t, n = 2, 3
    batch = TaskBatch(
        torch.rand(t, 2 * n, 1, 28, 28, generator=g, dtype=torch.float64), torch.arange(n).repeat(t, 2),
        torch.rand(t, n, 1, 28, 28, generator=g, dtype=torch.float64), torch.arange(n).repeat(t, 1), n_way=n,
    )
    learner.meta_loss(batch).loss.backward()
    theta = [p.detach() for p in learner.model.parameters()]
    phis = [_loop_phi(learner.model, batch.support_x[i], batch.support_y[i], 0.1, 2, True) for i in range(t)]
    for i, (name, p) in enumerate(learner.model.named_parameters()):
        expected = theta[i] - torch.stack([ph[i] for ph in phis]).mean(0)
        torch.testing.assert_close(p.grad, expected, rtol=RTOL, atol=1e-13, msg=name)


def test_sgd_on_the_loss_is_the_reptile_update() -> None:
    """One SGD step with lr epsilon gives theta + epsilon (mean phi - theta)."""
    torch.manual_seed(0)
    learner = Reptile(MLP(1, 1, hidden=(8,)), inner_lr=0.05, inner_steps=2, task_kind="regression", noise=1.0).double()
    batch = _sine_batch()
    theta = [p.detach().clone() for p in learner.model.parameters()]
    with torch.no_grad():
        phi = learner.adapt(batch.support).params
    eps = 0.3
    opt = torch.optim.SGD(learner.parameters(), lr=eps)
    learner.meta_loss(batch).loss.backward()
    opt.step()
    for (name, p), th in zip(learner.model.named_parameters(), theta):
        torch.testing.assert_close(p.detach(), th + eps * (phi[name].mean(0) - th), rtol=RTOL, atol=1e-13)


def test_adapt_and_predict_are_maml_with_the_same_steps() -> None:
    torch.manual_seed(0)
    model = MLP(1, 1, hidden=(8,)).double()
    reptile = Reptile(model, inner_lr=0.05, inner_steps=3, task_kind="regression")
    maml = MAML(model, inner_lr=0.05, inner_steps=3, first_order=True, task_kind="regression")
    batch = _sine_batch()
    with torch.no_grad():
        a = reptile(batch).mean
        b = maml(batch).mean
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_memory_does_not_build_a_graph_through_the_inner_loop() -> None:
    learner = Reptile(MLP(1, 1, hidden=(8,)), inner_steps=3, task_kind="regression")
    out = learner.meta_loss(_sine_batch().to(dtype=torch.float32))
    # the loss's graph reaches theta directly (a square), not through inner-loop gradients
    assert out.loss.grad_fn is not None and "distance" in out.metrics and out.metrics["distance"] > 0


@pytest.mark.parametrize(
    "kwargs, match",
    [({"inner_steps": 0}, "inner_steps"), ({"inner_lr": -1.0}, "inner_lr"), ({"noise": 0.0}, "noise"),
     ({"noise": "fixed"}, "noise"), ({"noise": True}, "noise"), ({"chunk_size": 0}, "chunk_size")],
)
def test_bad_options_are_config_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Reptile(MLP(1, 1, hidden=(8,)), **kwargs)
