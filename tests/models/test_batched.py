"""The hand-batched forward of the inner loop (bayesmeta.models.batched, issue 14).

Every check is against an independent route: a per-task loop of ``functional_call`` with task
t's parameters on task t's inputs (the definition), in float64, for values, gradients and the
second-order terms MAML differentiates (gradient of a function of the gradient).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

import bayesmeta.models.batched as batched_mod
from bayesmeta.inference import MAML, PLATIPUS
from bayesmeta.models import MLP, Conv4
from bayesmeta.models.batched import batched_call, vmap_call
from bayesmeta.tasks import TaskBatch

F64 = torch.float64
# float64 round-off on sums of a few thousand terms: values ~1, so 1e-10 is far above it and far
# below any real difference (a wrong task, statistic or parameter changes results at O(1e-2))
TOL = {"rtol": 1e-9, "atol": 1e-10}


def _params(model: nn.Module, t: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        k: (v.detach().unsqueeze(0) + 0.1 * torch.randn(t, *v.shape, generator=g, dtype=v.dtype)).requires_grad_(True)
        for k, v in model.named_parameters()
    }


def _loop(model: nn.Module, p: dict[str, torch.Tensor], x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    outs = []
    for t in range(x.shape[0]):
        kwargs = {} if mask is None else {"context_mask": mask[t]}
        outs.append(functional_call(model, {k: v[t] for k, v in p.items()}, (x[t],), kwargs))
    return torch.stack(outs)


def _second_order(out: torch.Tensor, p: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Gradient of |grad_p sum(out^2)|^2: what a second-order meta-gradient differentiates."""
    g = torch.autograd.grad((out**2).sum(), list(p.values()), create_graph=True)
    return list(torch.autograd.grad(sum((gi**2).sum() for gi in g), list(p.values())))


CASES = [("mlp", None)] + [("conv4", norm) for norm in ("task", "batch", "group", "instance", "layer", "none")]


@pytest.mark.parametrize(("kind", "norm"), CASES)
def test_batched_forward_equals_per_task_loop(kind: str, norm: str | None) -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    if kind == "mlp":
        model = MLP(3, 2, hidden=(5, 4)).double()
        x = torch.randn(4, 6, 3, generator=g, dtype=F64)
        mask = None
    else:
        model = Conv4(1, 5, hidden=8, norm=norm).double()
        x = torch.randn(3, 7, 1, 28, 28, generator=g, dtype=F64)
        # padded sets: some examples are not part of their task's context
        mask = (torch.rand(3, 7, generator=g) > 0.3) | (torch.arange(7) == 0) if model.context_mode else None
    p = _params(model, x.shape[0], seed=2)
    fast, ref = batched_call(model, p, x, mask), _loop(model, p, x, mask)
    torch.testing.assert_close(fast, ref, **TOL)
    for a, b in zip(_second_order(fast, p), _second_order(ref, p)):
        # a conv bias before a mean-removing norm has an exactly-zero gradient: compare absolutely
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-8 * max(1.0, float(b.abs().max())))


def test_tasks_are_independent() -> None:
    """Changing task 1's parameters or inputs leaves task 0's outputs bit for bit unchanged."""
    model = Conv4(1, 3, hidden=4).double()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 1, 28, 28, generator=g, dtype=F64)
    p = {k: v.detach() for k, v in _params(model, 2, seed=4).items()}
    base = batched_call(model, p, x)
    x2, p2 = x.clone(), {k: v.clone() for k, v in p.items()}
    x2[1] += 1.0
    for v in p2.values():
        v[1] *= 1.5
    assert torch.equal(batched_call(model, p2, x2)[0], base[0])


def test_unknown_backbones_and_parametrized_activations_use_vmap() -> None:
    class Custom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(2, 3)
            self.b = nn.Parameter(torch.ones(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tanh(self.a(x)) * self.b

    g = torch.Generator().manual_seed(5)
    for model in (Custom().double(), MLP(2, 1, hidden=(3,), activation=nn.PReLU).double()):
        x = torch.randn(3, 4, 2, generator=g, dtype=F64)
        p = _params(model, 3, seed=6)
        torch.testing.assert_close(batched_call(model, p, x), _loop(model, p, x, None), **TOL)
        torch.testing.assert_close(vmap_call(model, p, x), _loop(model, p, x, None), **TOL)


def test_learners_take_the_hand_batched_route(monkeypatch: pytest.MonkeyPatch) -> None:
    """MAML (MLP, Conv4) and PLATIPUS never fall back to vmap for the built-in backbones."""

    def refuse(*args: object, **kwargs: object) -> torch.Tensor:
        raise AssertionError("vmap_call used for a backbone with a batched forward")

    monkeypatch.setattr(batched_mod, "vmap_call", refuse)
    g = torch.Generator().manual_seed(7)
    sx, qx = torch.randn(2, 3, 1, 28, 28, generator=g), torch.randn(2, 6, 1, 28, 28, generator=g)
    batch = TaskBatch(sx, torch.arange(3).repeat(2, 1), qx, torch.arange(3).repeat(2, 2), n_way=3)
    for learner in (
        MAML(Conv4(1, 3, hidden=4), inner_lr=0.1, task_kind="classification"),
        MAML(Conv4(1, 3, hidden=4), inner_lr=0.1, adapt="head", task_kind="classification"),
        PLATIPUS(Conv4(1, 3, hidden=4), inner_lr=0.1, n_samples=2, task_kind="classification"),
    ):
        learner.meta_loss(batch).loss.backward()
        with torch.no_grad():
            learner.predict(learner.adapt(batch.support), batch.query_x)


def test_mlp_batched_forward_uses_an_activation_replaced_after_construction() -> None:
    """MLP builds its batched-forward plan once; a layer swapped afterwards must still be used
    (checked against a per-task functional_call of the modified network)."""
    from torch import nn
    from torch.func import functional_call

    from bayesmeta.models import MLP

    torch.manual_seed(0)
    m = MLP(1, 2, hidden=(4, 4))
    m.body[1] = nn.Tanh()
    p = {k: v.expand(3, *v.shape) + 0.1 * torch.randn(3, *v.shape) for k, v in m.named_parameters()}
    x = torch.randn(3, 5, 1)
    ref = torch.stack([functional_call(m, {k: v[t] for k, v in p.items()}, (x[t],)) for t in range(3)])
    torch.testing.assert_close(m.batched_forward(p, x), ref)
