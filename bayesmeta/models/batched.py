"""Layers with one parameter set per task: the hand-batched forward of the inner loop (issue 14).

The gradient family adapts a copy of the backbone's parameters per task. ``vmap`` over a
``functional_call`` computes the T adapted networks correctly for any backbone, but on small
networks its per-call overhead dominates: a second-order MAML meta-step on the sinusoid
benchmark cost 6.6x a plain forward+backward with a vmapped forward, 3.7x with the layers
written as batched matrix products (docs/benchmarks.md, "Inner-loop speed"). These functions
are the batched layers; a backbone that defines ``batched_forward(params, x, context_mask=None)``
(:class:`~bayesmeta.models.MLP`, :class:`~bayesmeta.models.Conv4`) is evaluated through them,
any other backbone through ``vmap`` (:func:`batched_call`).

Conventions: ``params`` maps the backbone's parameter names to ``[T, *shape]`` tensors (task t
uses slice t); inputs are ``[T, N, ...]`` (N examples of task t). Task t's outputs depend only on
task t's parameters and inputs, so the gradient of a sum of per-task losses with respect to
``params`` holds every task's own gradient (the inner loop relies on this).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from bayesmeta.models.context import context_mode

#: ``{name: [T, *shape]}``, as in :mod:`bayesmeta.inference.inner_loop`
Params = dict[str, torch.Tensor]

__all__ = ["batched_call", "batched_conv2d", "batched_linear", "channel_affine", "sub_params", "vmap_call"]


def sub_params(params: Params, prefix: str) -> Params:
    """The entries of ``params`` under ``prefix`` (``"body.0."``), with the prefix removed."""
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


def batched_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x W_t^T + b_t`` per task: x ``[T, *B, in]``, weight ``[T, out, in]``, bias ``[T, out]`` -> ``[T, *B, out]``."""
    # no reshape when x is [T, N, in] already: every view is a node in the (double) backward
    h = x if x.dim() == 3 else x.reshape(x.shape[0], -1, x.shape[-1])
    if bias is None:
        h = torch.bmm(h, weight.transpose(1, 2))
    else:
        h = torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))
    return h if x.dim() == 3 else h.reshape(*x.shape[:-1], h.shape[-1])


def batched_conv2d(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, conv: nn.Conv2d) -> torch.Tensor:
    """``conv``'s convolution with task t's weights on task t's images, as one grouped convolution.

    Args:
        h: ``[N, T, C, H, W]`` (the *example* dimension first, so that the tasks' channels are
            adjacent and the grouped convolution needs no copy).
        weight: ``[T, O, C, k, k]``; bias: ``[T, O]`` or ``None``.
        conv: the module whose stride, padding and dilation are used (``groups`` must be 1).

    Returns:
        ``[N, T, O, H', W']``.
    """
    n, t, c = h.shape[:3]
    out = F.conv2d(
        h.reshape(n, t * c, *h.shape[3:]),
        weight.reshape(t * weight.shape[1], *weight.shape[2:]),
        None if bias is None else bias.reshape(-1),
        conv.stride,
        conv.padding,
        conv.dilation,
        groups=t,
    )
    return out.reshape(n, t, weight.shape[1], *out.shape[2:])


def channel_affine(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``x * w_t[c] + b_t[c]`` for x ``[N, T, C, H, W]`` and weight, bias ``[T, C]``."""
    return torch.addcmul(bias[None, :, :, None, None], x, weight[None, :, :, None, None])


def batched_call(
    model: nn.Module, params: Params, x: torch.Tensor, context_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``model`` with task t's parameters on task t's inputs: ``[T, N, ...] -> [T, N, out]``.

    Uses ``model.batched_forward`` when the backbone defines one (and batched matrix products
    for a bare ``nn.Linear``, ANIL's head); otherwise :func:`vmap_call` (any backbone).

    Args:
        model: the backbone.
        params: ``{name: [T, *shape]}`` for *every* parameter of the backbone (expand shared
            ones: ``p.expand(T, *p.shape)`` costs nothing).
        x: ``[T, N, ...]``.
        context_mask: ``[T, N]`` bool, for a context-normalized backbone.
    """
    if type(model) is nn.Linear:
        return batched_linear(x, params["weight"], params.get("bias"))
    fast: Callable[..., torch.Tensor] | None = getattr(model, "batched_forward", None)
    if fast is not None:
        return fast(params, x, context_mask)
    return vmap_call(model, params, x, context_mask)


def vmap_call(
    model: nn.Module, params: Params, x: torch.Tensor, context_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """:func:`batched_call` for any backbone: ``vmap`` over tasks of a ``functional_call``."""
    shared = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    ctx = context_mode(model) is not None

    def one(p: Params, xt: torch.Tensor, mt: torch.Tensor | None) -> torch.Tensor:
        kwargs = {"context_mask": mt} if ctx and mt is not None else {}
        return functional_call(model, {**shared, **p}, (xt,), kwargs)

    return vmap(one, in_dims=(0, 0, None if context_mask is None else 0))(params, x, context_mask)
