"""Calling a backbone so that a prediction depends only on its own task (DESIGN.md section 4).

Backbones with context-normalized layers (:class:`~bayesmeta.models.Conv4` with
``norm="task"`` or ``"batch"``) declare ``context_mode``:

- ``"support"``: a query is normalized with its task's *support* statistics (TaskNorm). The
  learner forwards support and queries together along the set dimension, with a context mask
  that is True on the present support points only, and keeps the query outputs. A query's output
  then depends on its task's support set and on itself, never on the other queries.
- ``"self"``: transductive batch statistics of the examples given (support while adapting, the
  query set while predicting), per task: the explicit opt-in of ``norm="batch"``.
- ``None`` (every other backbone): examples are independent; the backbone is called as is.

Every learner calls its backbone through :func:`support_forward` and :func:`query_forward`, so
the rule is kept in one place. ``fn`` is whatever the learner evaluates (the backbone, its
``features``, or a ``functional_call`` with adapted parameters); for context-mode backbones it
must accept ``context_mask=`` as a keyword.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from bayesmeta.exceptions import ShapeError

__all__ = ["context_mode", "joint_forward", "query_forward", "set_features", "support_forward"]

#: ``fn(x, **kw) -> outputs``: inputs ``[*B, N, ...]`` to outputs ``[*B, N, ...]``.
BackboneFn = Callable[..., torch.Tensor]


def context_mode(model: nn.Module) -> str | None:
    """``"support"``, ``"self"`` or ``None`` (see the module docstring)."""
    mode = getattr(model, "context_mode", None)
    return mode if mode in ("support", "self") else None


def set_features(backbone: nn.Module, x: torch.Tensor, context_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The backbone's features (``features()`` when it has one) of sets ``[T, N, ...]``: ``[T, N, ...]``.

    A context-normalized backbone gets the sets as they are (with ``context_mask`` ``[T, N]``);
    any other backbone gets the ``T * N`` examples flattened into one batch dimension, since
    per-example backbones may accept only one. Pass it as ``fn`` to :func:`support_forward` and
    friends, e.g. ``functools.partial(set_features, backbone)``.
    """
    f = backbone.features if hasattr(backbone, "features") else backbone
    if context_mode(backbone) is not None:
        return f(x, context_mask=context_mask)
    out = f(x.flatten(0, 1))
    return out.reshape(*x.shape[:2], *out.shape[1:])


def kept_context(
    model: nn.Module, support_x: torch.Tensor, support_mask: torch.Tensor | None
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """What a posterior must keep of the support set for :func:`query_forward`.

    Returns:
        ``(support_x, support_mask)`` for a support-normalized backbone (queries are normalized
        with their task's support statistics at predict time), else ``(None, None)``.
    """
    if context_mode(model) == "support":
        return support_x, support_mask
    return None, None


def _full_mask(x: torch.Tensor, set_dim: int, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is not None:
        return mask
    return torch.ones(x.shape[: set_dim + 1], dtype=torch.bool, device=x.device)


def support_forward(
    fn: BackboneFn, model: nn.Module, support_x: torch.Tensor, support_mask: torch.Tensor | None, set_dim: int
) -> torch.Tensor:
    """Backbone outputs at the support points, with the support as the task's context.

    Args:
        fn: the function to evaluate (see the module docstring).
        model: the backbone (read for ``context_mode`` only).
        support_x: ``[*B, S, ...]`` with the set dimension at ``set_dim``.
        support_mask: ``[*B, S]`` bool (True: present), or ``None`` for all present.
        set_dim: index of S in ``support_x`` (1 for ``[T, S, ...]``, 0 inside a per-task vmap).

    Returns:
        ``fn``'s outputs ``[*B, S, ...]``.
    """
    if context_mode(model) is None:
        return fn(support_x)
    return fn(support_x, context_mask=_full_mask(support_x, set_dim, support_mask))


def query_forward(
    fn: BackboneFn,
    model: nn.Module,
    query_x: torch.Tensor,
    support_x: torch.Tensor | None,
    support_mask: torch.Tensor | None,
    set_dim: int,
    query_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Backbone outputs at the query points, normalized as the backbone's ``context_mode`` says.

    Args:
        fn, model, set_dim: as in :func:`support_forward`.
        query_x: ``[*B, Q, ...]``.
        support_x: ``[*B, S, ...]``, the same tasks' support inputs (needed for ``"support"``).
        support_mask: ``[*B, S]`` bool or ``None``.
        query_mask: ``[*B, Q]`` bool or ``None``; only ``"self"`` (transductive) mode uses it,
            so that padded query points stay out of the statistics.

    Returns:
        ``fn``'s outputs ``[*B, Q, ...]``.
    """
    mode = context_mode(model)
    if mode is None:
        return fn(query_x)
    if mode == "self":
        return fn(query_x, context_mask=_full_mask(query_x, set_dim, query_mask))
    if support_x is None:
        raise ShapeError("support_x: a support-normalized backbone (context_mode 'support') needs the support inputs, got None")
    s, q = support_x.shape[set_dim], query_x.shape[set_dim]
    smask = _full_mask(support_x, set_dim, support_mask)
    qmask = torch.zeros(query_x.shape[: set_dim + 1], dtype=torch.bool, device=query_x.device)
    out = fn(torch.cat([support_x, query_x], dim=set_dim), context_mask=torch.cat([smask, qmask], dim=set_dim))
    return out.narrow(set_dim, s, q)


def joint_forward(
    fn: BackboneFn,
    model: nn.Module,
    support_x: torch.Tensor,
    support_mask: torch.Tensor | None,
    query_x: torch.Tensor,
    set_dim: int,
    query_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(support_forward(...), query_forward(...))`` with one backbone call where that is exact.

    For a support-normalized backbone, the support points' outputs inside the joint call equal
    :func:`support_forward`'s (the context is the same support set and each example's own
    moments are its own), so meta-training pays for one pass instead of two.

    Returns:
        Outputs at the support points ``[*B, S, ...]`` and at the query points ``[*B, Q, ...]``.
    """
    if context_mode(model) != "support":
        return (
            support_forward(fn, model, support_x, support_mask, set_dim),
            query_forward(fn, model, query_x, support_x, support_mask, set_dim, query_mask),
        )
    s, q = support_x.shape[set_dim], query_x.shape[set_dim]
    smask = _full_mask(support_x, set_dim, support_mask)
    qmask = torch.zeros(query_x.shape[: set_dim + 1], dtype=torch.bool, device=query_x.device)
    out = fn(torch.cat([support_x, query_x], dim=set_dim), context_mask=torch.cat([smask, qmask], dim=set_dim))
    return out.narrow(set_dim, 0, s), out.narrow(set_dim, s, q)
