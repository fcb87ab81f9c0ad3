"""Batched functional gradient steps: the inner loop of every gradient-based meta-learner.

One task's adaptation is written as a pure function of a parameter dict and that task's data
(``torch.func.grad`` + plain arithmetic), then ``torch.func.vmap`` maps it over the task
dimension. No module is cloned and nothing is written to ``_parameters`` (DESIGN.md section 4).

Second-order meta-gradients come for free: ``torch.func.grad`` is differentiable by the outer
``torch.autograd`` whenever the starting parameters require grad. First order (FOMAML) passes
*detached* parameters to ``grad`` so that no higher-order graph is even built, and adds the
(constant) gradient to the attached parameters: d(adapted)/d(theta) = I.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch.func import grad, vmap

__all__ = [
    "Params",
    "TaskLoss",
    "masked_mean",
    "cross_entropy_loss",
    "squared_error_loss",
    "gradient_steps",
    "batched_gradient_steps",
]

Params = dict[str, torch.Tensor]
#: ``loss(params, x, y, mask) -> scalar`` for one task: x ``[S, ...]``, y ``[S]``/``[S, Dy]``, mask ``[S]``.
TaskLoss = Callable[[Params, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` (``[N]``) over entries where ``mask`` (``[N]`` bool) is True."""
    w = mask.to(values.dtype)
    return (values * w).sum() / w.sum().clamp_min(1.0)


def cross_entropy_loss(logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``logits`` ``[N, C]`` against labels ``y`` ``[N]`` over present points."""
    return masked_mean(F.cross_entropy(logits, y, reduction="none"), mask)


def squared_error_loss(pred: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over present points of the squared error averaged over Dy; ``pred``, ``y``: ``[N, Dy]``."""
    return masked_mean(((pred - y) ** 2).mean(-1), mask)


def gradient_steps(
    loss: TaskLoss,
    params: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor,
    steps: int,
    lr: float | Mapping[str, torch.Tensor],
    first_order: bool = False,
) -> Params:
    """``steps`` plain gradient-descent steps on one task's loss.

    Args:
        loss: the task loss as a pure function of the parameter dict.
        params: starting parameters (theta); may require grad for meta-gradients.
        x: ``[S, ...]`` support inputs of one task.
        y: ``[S]`` labels or ``[S, Dy]`` targets.
        mask: ``[S]`` bool, True where a point is present.
        steps: number of steps K >= 0.
        lr: a scalar step size, or one tensor per parameter (Meta-SGD), broadcastable to it.
        first_order: drop second-order terms (FOMAML).

    Returns:
        The adapted parameters phi_K (same keys and shapes as ``params``).
    """
    g = grad(loss)
    for _ in range(steps):
        if first_order:
            grads = g({k: v.detach() for k, v in params.items()}, x, y, mask)
        else:
            grads = g(params, x, y, mask)
        if isinstance(lr, Mapping):
            params = {k: p - lr[k] * grads[k] for k, p in params.items()}
        else:
            params = {k: p - lr * grads[k] for k, p in params.items()}
    return params


def batched_gradient_steps(
    loss: TaskLoss,
    params: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor,
    steps: int,
    lr: float | Mapping[str, torch.Tensor],
    first_order: bool = False,
    chunk_size: int | None = None,
) -> Params:
    """:func:`gradient_steps` for T tasks at once, vmapped over the leading task dimension.

    Args:
        loss, params, steps, lr, first_order: as in :func:`gradient_steps`; ``params`` are shared
            by all tasks (no task dimension).
        x: ``[T, S, ...]``; y: ``[T, S]`` or ``[T, S, Dy]``; mask: ``[T, S]`` bool.
        chunk_size: tasks processed per vmapped chunk (``None``: all at once); caps peak memory.

    Returns:
        Adapted parameters, each with a leading task dimension: ``[T, *param.shape]``.
    """

    def one_task(xt: torch.Tensor, yt: torch.Tensor, mt: torch.Tensor) -> Params:
        return gradient_steps(loss, params, xt, yt, mt, steps, lr, first_order)

    if steps == 0:
        t = x.shape[0]
        return {k: p.unsqueeze(0).expand(t, *p.shape) for k, p in params.items()}
    return vmap(one_task, in_dims=(0, 0, 0), chunk_size=chunk_size, randomness="different")(x, y, mask)
