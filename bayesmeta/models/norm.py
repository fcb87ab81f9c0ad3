"""Normalization layers that keep every prediction local to its own task (DESIGN.md section 4).

A meta-learner predicts query q of task t from task t's support set, x_q and the
meta-parameters only. Normalization is where that rule is easiest to break: plain batch norm over
a call's whole input mixes tasks and queries. The choices here (``norm=`` of
:class:`~bayesmeta.models.Conv4`):

==============  =========================================================  ===================
``norm``        statistics                                                 task-local?
==============  =========================================================  ===================
``"task"``      TaskNorm-I (Bronskill et al., ICML 2020): the task's        yes (support only)
                *context* (support) moments blended with the example's
                own (instance) moments, ``alpha = sigmoid(a * n_ctx + b)``
``"group"``     per example, over groups of channels (``nn.GroupNorm``)    yes (per example)
``"instance"``  per example and channel (``nn.GroupNorm(C, C)``)           yes (per example)
``"layer"``     per example over all channels (``nn.GroupNorm(1, C)``)     yes (per example)
``"none"``      no normalization                                           yes
``"batch"``     batch statistics of the examples given *with* the task      transductive opt-in
                (support while adapting, the query set while predicting),
                never across tasks
==============  =========================================================  ===================

Context-normalized layers (``"task"``, ``"batch"``) take inputs with an explicit set dimension,
``[G, N, C, H, W]`` (G task groups, N examples of one task), and a boolean ``context_mask``
``[G, N]`` naming the examples whose moments define the task's statistics. Padded (masked)
support points are simply left out of the mask, so they never enter any statistic. How a
learner chooses the context is in :mod:`bayesmeta.models.context`.

Everything is written with elementary ops: on torch 2.13 the double backward of
``F.batch_norm`` under ``torch.func.grad`` is wrong (a few percent off against per-task autograd
and finite differences), while these ops differentiate correctly to any order and under ``vmap``.
``F.group_norm``'s double backward was checked against finite differences and a per-task
autograd loop (tests/models/test_norm.py), so the per-example norms use ``nn.GroupNorm``.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import nn

from bayesmeta.exceptions import ConfigError, ShapeError

__all__ = [
    "NORMS",
    "CONTEXT_NORMS",
    "Norm",
    "BatchStatNorm2d",
    "ContextNorm2d",
    "TaskNorm2d",
    "batch_stat_norm",
    "instance_moments",
    "make_norm",
    "masked_moments",
    "pooled_moments",
    "task_norm",
]

Norm = Literal["task", "group", "instance", "layer", "none", "batch"]
#: Every accepted ``norm=`` value.
NORMS: tuple[str, ...] = get_args(Norm)
#: Norms whose statistics come from a task's context set (they need a set dimension).
CONTEXT_NORMS: tuple[str, ...] = ("task", "batch")
#: Norms that subtract a per-channel mean, making a conv bias before them redundant.
MEAN_REMOVING_NORMS: tuple[str, ...] = ("task", "batch", "instance")


def instance_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example, per-channel mean and biased variance over H, W: ``[G, N, C, 1, 1]`` each."""
    var, mean = torch.var_mean(x, dim=(3, 4), correction=0, keepdim=True)
    return mean, var


def pooled_moments(
    mu_i: torch.Tensor, var_i: torch.Tensor, context_mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Moments of a task's context examples from their per-example moments.

    Every example has the same H x W, so the context's mean is the mean of its examples' means
    and its variance is the law of total variance, ``mean_i(var_i + (mu_i - mu_c)^2)`` (summed
    without cancellation). Only ``[G, N, C]``-sized tensors are touched.

    Args:
        mu_i, var_i: ``[G, N, C, 1, 1]`` from :func:`instance_moments`.
        context_mask: ``[G, N]`` bool, True for context examples; ``None`` means all N.

    Returns:
        ``(mean, var, n_context)``: ``[G, 1, C, 1, 1]`` each and ``[G]``.
    """
    if context_mask is None:
        w = mu_i.new_ones(mu_i.shape[:2])
    else:
        w = context_mask.to(mu_i.dtype)
    n_ctx = w.sum(1)  # [G]
    w5 = w[:, :, None, None, None]
    # clamp: a group with no context examples gets zero moments rather than a division by zero;
    # learners refuse an empty support set before they get here.
    denom = n_ctx.clamp_min(1.0)[:, None, None, None, None]
    mean = (w5 * mu_i).sum(1, keepdim=True) / denom
    var = (w5 * (var_i + (mu_i - mean) ** 2)).sum(1, keepdim=True) / denom
    return mean, var, n_ctx


def masked_moments(x: torch.Tensor, context_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-channel mean and (biased) variance over a task's context examples.

    Args:
        x: ``[G, N, C, H, W]`` activations, G task groups of N examples.
        context_mask: ``[G, N]`` bool, True for context examples; ``None`` means all N.

    Returns:
        ``(mean, var, n_context)``: mean and var ``[G, 1, C, 1, 1]``, and the number of context
        examples per group ``[G]`` (as x's dtype).
    """
    return pooled_moments(*instance_moments(x), context_mask)


def _channels(v: torch.Tensor) -> torch.Tensor:
    """A per-channel parameter, ``[C]`` (shared) or ``[G, C]`` (one per group), as ``[G|1, 1, C, 1, 1]``."""
    return v.view(1, 1, -1, 1, 1) if v.dim() == 1 else v[:, None, :, None, None]


def _normalize(x: torch.Tensor, mu: torch.Tensor, var: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """``(x - mu) / sqrt(var + eps) * weight + bias`` as one multiply-add over the large tensor."""
    scale = _channels(weight) * torch.rsqrt(var + eps)
    return torch.addcmul(_channels(bias) - mu * scale, x, scale)


def batch_stat_norm(
    x: torch.Tensor, context_mask: torch.Tensor | None, weight: torch.Tensor, bias: torch.Tensor, eps: float
) -> torch.Tensor:
    """:class:`BatchStatNorm2d` as a function: x ``[G, N, C, H, W]``, weight and bias ``[C]`` or ``[G, C]``."""
    mean, var, _ = masked_moments(x, context_mask)
    return _normalize(x, mean, var, weight, bias, eps)


def task_norm(
    x: torch.Tensor,
    context_mask: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor,
    alpha_scale: torch.Tensor,
    alpha_offset: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """:class:`TaskNorm2d` as a function (see there), with shared or per-group parameters.

    Args:
        x: ``[G, N, C, H, W]``; context_mask: ``[G, N]`` bool or ``None`` (all N).
        weight, bias: ``[C]`` or ``[G, C]``.
        alpha_scale, alpha_offset: ``[]`` or ``[G]``.
        eps: added to the variance.
    """
    # one pass over the activations for the moments, one for the normalization; everything
    # in between is [G, N, C]-sized
    mu_i, var_i = instance_moments(x)  # [G, N, C, 1, 1]
    mu_c, var_c, n_ctx = pooled_moments(mu_i, var_i, context_mask)  # [G, 1, C, 1, 1]
    a = torch.sigmoid(alpha_scale * n_ctx + alpha_offset)[:, None, None, None, None]
    mu = a * mu_c + (1 - a) * mu_i
    var = a * (var_c + (mu_c - mu) ** 2) + (1 - a) * (var_i + (mu_i - mu) ** 2)
    return _normalize(x, mu, var, weight, bias, eps)


def _check_set_input(name: str, x: torch.Tensor, context_mask: torch.Tensor | None) -> None:
    if x.dim() != 5:
        raise ShapeError(f"{name}: expected activations [G, N, C, H, W], got shape {list(x.shape)}")
    if context_mask is not None and tuple(context_mask.shape) != tuple(x.shape[:2]):
        raise ShapeError(
            f"context_mask: expected shape {list(x.shape[:2])} ([G, N]) to match the activations, "
            f"got {list(context_mask.shape)}"
        )


class ContextNorm2d(nn.Module):
    """Base of the context-normalized layers: a per-channel affine map after normalization.

    Subclasses implement ``forward(x [G, N, C, H, W], context_mask [G, N] | None)``; backbones
    recognize them by ``context_norm = True`` and pass them the set dimension and the mask.
    """

    context_norm = True

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))


class BatchStatNorm2d(ContextNorm2d):
    """Batch normalization with statistics of one task's context set, no running averages.

    With the learners' default use (the task's own inputs as context: support while adapting,
    queries while predicting) this is MAML's original transductive batch norm, restricted to one
    task. Statistics never cross tasks: each group ``g`` of ``[G, N, C, H, W]`` is normalized
    with its own context moments.

    Args:
        channels: C.
        eps: added to the variance.

    Shapes:
        ``forward(x [G, N, C, H, W], context_mask [G, N] | None) -> [G, N, C, H, W]``.
    """

    def forward(self, x: torch.Tensor, context_mask: torch.Tensor | None = None) -> torch.Tensor:
        _check_set_input("x", x, context_mask)
        return batch_stat_norm(x, context_mask, self.weight, self.bias, self.eps)


class TaskNorm2d(ContextNorm2d):
    """TaskNorm-I (Bronskill et al., ICML 2020): context moments blended with instance moments.

    For each task, ``mu_c, var_c`` are the moments of its context (support) examples and
    ``mu_i, var_i`` those of each example on its own (over H, W). With
    ``alpha = sigmoid(a * n_ctx + b)`` (``a``, ``b`` learned scalars; ``n_ctx`` the number of
    context examples), the moments used are the mixture's::

        mu  = alpha * mu_c + (1 - alpha) * mu_i
        var = alpha * (var_c + (mu_c - mu)^2) + (1 - alpha) * (var_i + (mu_i - mu)^2)

    so a large support set leans on its statistics and a tiny one on each example's own. Queries
    never enter a statistic of another example: a query's output depends on its task's context
    and on itself only. ``a`` and ``b`` start at 0 (``alpha = 0.5``), as in the authors' code;
    variances are the biased (population) ones of ``nn.BatchNorm2d``'s normalization, where the
    authors' code uses ``torch.var``'s unbiased estimate (a factor ``n / (n - 1)`` with
    ``n = N * H * W`` or ``H * W``: up to 12.5% for instance moments on Conv4's last 3x3 map).

    Args:
        channels: C.
        eps: added to the variance.

    Shapes:
        ``forward(x [G, N, C, H, W], context_mask [G, N] | None) -> [G, N, C, H, W]``.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__(channels, eps)
        # The paper's initialisation (a = 0, b = 0: alpha = 0.5 for every context size); the
        # meta-objective then learns how much a context of a given size is trusted.
        self.alpha_scale = nn.Parameter(torch.zeros(()))
        self.alpha_offset = nn.Parameter(torch.zeros(()))

    def alpha(self, n_context: torch.Tensor) -> torch.Tensor:
        """Blending weight of the context moments for ``n_context`` examples (any shape)."""
        return torch.sigmoid(self.alpha_scale * n_context + self.alpha_offset)

    def forward(self, x: torch.Tensor, context_mask: torch.Tensor | None = None) -> torch.Tensor:
        _check_set_input("x", x, context_mask)
        return task_norm(x, context_mask, self.weight, self.bias, self.alpha_scale, self.alpha_offset, self.eps)


def make_norm(kind: str, channels: int) -> nn.Module:
    """The normalization module for ``norm=kind`` over ``channels`` channels.

    Raises:
        ConfigError: an unknown ``kind``.
    """
    if kind == "task":
        return TaskNorm2d(channels)
    if kind == "batch":
        return BatchStatNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    if kind == "instance":
        return nn.GroupNorm(channels, channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"norm: expected one of {', '.join(repr(n) for n in NORMS)}, got {kind!r}")
