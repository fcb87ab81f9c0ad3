"""Batched gradient steps: the inner loop of every gradient-based meta-learner.

All tasks adapt at once. The adapted parameters are ``[T, *shape]`` tensors (one slice per
task); one step evaluates every task's support loss in one batched call, sums the T losses and
differentiates the sum with ``torch.autograd.grad`` with respect to the ``[T, *shape]``
parameters. Task t's loss depends only on slice t, so slice t of that gradient is task t's own
gradient: tasks stay independent (DESIGN.md section 4) and the result equals a per-task loop
(tests/inference/test_maml_gradients.py checks it against ``higher``, finite differences and a
per-task autograd loop). No module is cloned and nothing is written to ``_parameters``.

The batched call is the backbone's hand-batched forward where it has one
(:mod:`bayesmeta.models.batched`: batched matrix products and grouped convolutions), else a
``vmap`` of a ``functional_call``. Why not ``vmap(grad(loss))`` (this module's first version):
on the issue-14 benchmark (sinusoid, 25 tasks, 40-40 MLP, second order) it cost 8.2x a plain
forward+backward of the same network on the same points, ``vmap`` of the forward plus one
``autograd.grad`` 6.6x, the hand-batched forward plus ``autograd.grad`` 3.7x
(docs/benchmarks.md, "Inner-loop speed").

Second order: the gradient is taken with ``create_graph=True`` whenever the starting
parameters require grad, so the outer backward differentiates through the steps. First order
(FOMAML) differentiates *detached* parameters (no higher-order graph is built) and adds the
constant step to the attached parameters: d(adapted)/d(theta) = I. Under ``torch.no_grad()``
(evaluation) the steps run on detached parameters and return detached results.

A loss is given per task, ``loss(params, x, y, mask) -> scalar`` (:data:`TaskLoss`); its batched
form is its ``batched`` attribute when it has one (``[T]`` losses from ``[T, ...]`` parameters
and data, :data:`BatchedLoss`), else ``vmap(loss)``. :func:`with_batched` attaches one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch.func import vmap

from bayesmeta.masked import masked_mean

__all__ = [
    "BatchedLoss",
    "Params",
    "TaskLoss",
    "as_batched",
    "batched_gradient_steps",
    "chunked",
    "chunks",
    "cross_entropy_loss",
    "gradient_steps",
    "loss_gradient",
    "squared_error_loss",
    "stacked_gradient_steps",
    "with_batched",
]

Params = dict[str, torch.Tensor]
#: ``loss(params, x, y, mask) -> scalar`` for one task: x ``[S, ...]``, y ``[S]``/``[S, Dy]``, mask ``[S]``
#: bool or ``None`` (every point present; the same everywhere below).
TaskLoss = Callable[[Params, torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
#: ``loss(params, x, y, mask) -> [B]`` for B tasks: params ``{name: [B, *shape]}``, x ``[B, S, ...]``,
#: y ``[B, S]``/``[B, S, Dy]``, mask ``[B, S]``; entry b depends only on slice b of each argument.
BatchedLoss = Callable[[Params, torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def cross_entropy_loss(logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean cross-entropy of ``logits`` ``[..., N, C]`` against labels ``y`` ``[..., N]`` over present points: ``[...]``."""
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
    return masked_mean(ce.reshape(y.shape), mask, dim=-1)


def squared_error_loss(pred: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over present points of the squared error averaged over Dy; ``pred``, ``y``: ``[..., N, Dy]`` -> ``[...]``."""
    if mask is None:  # one reduction: every op is paid again in the backward and double backward
        return ((pred - y) ** 2).mean((-2, -1))
    return masked_mean(((pred - y) ** 2).mean(-1), mask, dim=-1)


def with_batched(loss: TaskLoss, batched: BatchedLoss) -> TaskLoss:
    """Attach ``batched``, the same loss for B tasks at once, to the per-task ``loss`` (returned)."""
    loss.batched = batched  # type: ignore[attr-defined]
    return loss


def as_batched(loss: TaskLoss | BatchedLoss) -> BatchedLoss:
    """The batched form of a per-task loss: its ``batched`` attribute, else ``vmap(loss)``."""
    fast = getattr(loss, "batched", None)
    if fast is not None:
        return fast
    over_tasks = vmap(loss, randomness="different")
    no_mask = vmap(loss, in_dims=(0, 0, 0, None), randomness="different")

    def batched(p: Params, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return no_mask(p, x, y, None) if mask is None else over_tasks(p, x, y, mask)

    return batched


def loss_gradient(
    loss: BatchedLoss, params: Params, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None, create_graph: bool
) -> Params:
    """Gradient of each of B losses with respect to its own parameter slice, ``{name: [B, *shape]}``.

    ``create_graph=True`` keeps the graph of the gradient (second order; ``params`` must be on
    the graph); otherwise the gradient is taken at detached parameters and returned detached.
    A parameter the loss does not reach gets a zero gradient.
    """
    names = list(params)
    if not create_graph:
        params = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    with torch.enable_grad():
        tracked = [params[k] for k in names]
        grads = torch.autograd.grad(loss(params, x, y, mask).sum(), tracked, create_graph=create_graph, allow_unused=True)
    return {
        k: torch.zeros_like(p) if g is None else (g if create_graph else g.detach())
        for k, p, g in zip(names, tracked, grads)
    }


def _steps(
    loss: BatchedLoss,
    params: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor | None,
    steps: int,
    lr: float | Mapping[str, torch.Tensor],
    first_order: bool,
) -> Params:
    """The one implementation: ``steps`` steps from ``[B, *shape]`` parameters, B sets at once."""
    if not torch.is_grad_enabled():
        # evaluation under no_grad: nothing is differentiated through the steps
        params = {k: v.detach() for k, v in params.items()}
    second_order = not first_order and torch.is_grad_enabled() and any(v.requires_grad for v in params.values())
    for _ in range(steps):
        grads = loss_gradient(loss, params, x, y, mask, create_graph=second_order)
        # one fused op per parameter (p - lr * g): each op is paid again in the outer backward
        if isinstance(lr, (float, int)):
            params = {k: torch.add(p, grads[k], alpha=-lr) for k, p in params.items()}
        elif isinstance(lr, Mapping):  # Meta-SGD, PLATIPUS: a learned step size per entry
            params = {k: torch.addcmul(p, lr[k], grads[k], value=-1.0) for k, p in params.items()}
        else:  # a tensor step size
            params = {k: torch.addcmul(p, lr, grads[k], value=-1.0) for k, p in params.items()}
    return params


def chunks(n: int, chunk_size: int | None) -> list[slice]:
    """Slices of ``range(n)`` of at most ``chunk_size`` (one slice when ``chunk_size`` is ``None``)."""
    if chunk_size is None or chunk_size >= n:
        return [slice(0, n)]
    return [slice(i, min(i + chunk_size, n)) for i in range(0, n, chunk_size)]


def chunked(fn: Callable[..., torch.Tensor], chunk_size: int | None, params: Params, *args: torch.Tensor | None) -> torch.Tensor:
    """``fn(params, *args)`` over chunks of the leading (task) dimension, concatenated (a memory cap).

    ``args`` that are ``None`` are passed as ``None`` to every chunk.
    """
    n = next(iter(params.values())).shape[0]
    if chunk_size is None or chunk_size >= n:
        return fn(params, *args)  # no slicing: a slice costs a view and a zero-filled backward
    parts = [
        fn({k: v[c] for k, v in params.items()}, *(None if a is None else a[c] for a in args))
        for c in chunks(n, chunk_size)
    ]
    return torch.cat(parts)


def stacked_gradient_steps(
    loss: TaskLoss | BatchedLoss,
    params: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor | None,
    steps: int,
    lr: float | Mapping[str, torch.Tensor],
    first_order: bool = False,
    chunk_size: int | None = None,
) -> Params:
    """Gradient steps from a *different* starting point per task (PLATIPUS' draws, particles).

    Args:
        loss: per-task loss (with an optional ``batched`` form, see the module docstring).
        params: ``{name: [B, *shape]}``, task b's starting parameters at slice b.
        x: ``[B, S, ...]``; y: ``[B, S]`` or ``[B, S, Dy]``; mask: ``[B, S]`` bool or ``None``.
        steps, lr, first_order: as in :func:`gradient_steps`.
        chunk_size: tasks per chunk (``None``: all at once); caps peak memory.

    Returns:
        The adapted parameters ``{name: [B, *shape]}``.
    """
    if steps == 0:
        return dict(params)
    fn = as_batched(loss)
    n = x.shape[0]
    if chunk_size is None or chunk_size >= n:
        return _steps(fn, dict(params), x, y, mask, steps, lr, first_order)
    parts = [
        _steps(fn, {k: v[c] for k, v in params.items()}, x[c], y[c], None if mask is None else mask[c], steps, lr, first_order)
        for c in chunks(n, chunk_size)
    ]
    return {k: torch.cat([p[k] for p in parts]) for k in params}


def batched_gradient_steps(
    loss: TaskLoss | BatchedLoss,
    params: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor | None,
    steps: int,
    lr: float | Mapping[str, torch.Tensor],
    first_order: bool = False,
    chunk_size: int | None = None,
) -> Params:
    """``steps`` plain gradient-descent steps on each of T tasks' losses, from shared parameters.

    Args:
        loss: the task loss as a pure function of the parameter dict (per task; its batched form
            is used, see the module docstring).
        params: starting parameters theta, shared by all tasks (no task dimension); may
            require grad for meta-gradients.
        x: ``[T, S, ...]``; y: ``[T, S]`` or ``[T, S, Dy]``; mask: ``[T, S]`` bool or ``None``.
        steps: number of steps K >= 0.
        lr: a scalar step size, or one tensor per parameter (Meta-SGD), broadcastable to it.
        first_order: drop second-order terms (FOMAML).
        chunk_size: tasks per chunk (``None``: all at once); caps peak memory.

    Returns:
        Adapted parameters, each with a leading task dimension: ``[T, *param.shape]``.
    """
    t = x.shape[0]
    # one view op per parameter (expand adds the task dimension; no unsqueeze): every view is a
    # node that the backward and double backward pay again
    start = {k: p.expand(t, *p.shape) for k, p in params.items()}
    return stacked_gradient_steps(loss, start, x, y, mask, steps, lr, first_order, chunk_size)


def gradient_steps(
    loss: TaskLoss,
    params: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor | None,
    steps: int,
    lr: float | Mapping[str, torch.Tensor],
    first_order: bool = False,
) -> Params:
    """``steps`` plain gradient-descent steps on one task's loss (:func:`batched_gradient_steps` with T = 1).

    Args:
        loss: the task loss as a pure function of the parameter dict.
        params: starting parameters (theta); may require grad for meta-gradients.
        x: ``[S, ...]`` support inputs of one task.
        y: ``[S]`` labels or ``[S, Dy]`` targets.
        mask: ``[S]`` bool, True where a point is present, or ``None`` (all present).
        steps: number of steps K >= 0.
        lr: a scalar step size, or one tensor per parameter (Meta-SGD), broadcastable to it.
        first_order: drop second-order terms (FOMAML).

    Returns:
        The adapted parameters phi_K (same keys and shapes as ``params``).
    """
    out = batched_gradient_steps(
        loss, params, x[None], y[None], None if mask is None else mask[None], steps, lr, first_order
    )
    return {k: v[0] for k, v in out.items()}
