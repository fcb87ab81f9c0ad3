"""Means over ragged sets: the one masked mean every layer uses.

A ground-floor module (it imports only torch). Tasks in a :class:`~bayesmeta.tasks.TaskBatch` are
padded to a common size and carry a presence mask (True = present); every mean over points —
a learner's query loss, a set encoder's pooled representation, a metric's per-task average —
must count only the present points, so that a task's numbers never depend on how much padding
the other tasks in its batch forced on it (DESIGN section 4).
"""

from __future__ import annotations

import torch

__all__ = ["masked_mean"]


def masked_mean(
    x: torch.Tensor, mask: torch.Tensor | None = None, dim: int | tuple[int, ...] | None = None
) -> torch.Tensor:
    """Mean of ``x`` over ``dim``, counting only the entries where ``mask`` is True.

    Args:
        x: values ``[*M, *F]``: the mask's dims ``M`` first, then any trailing feature dims ``F``
            (a ``[T, N]`` mask covers ``[T, N, D]`` set features point by point).
        mask: bool ``[*M]`` (True = present), or None when every entry is present.
        dim: the dim(s) to reduce; None reduces over all of them (a scalar).

    Returns:
        ``x`` reduced over ``dim``. Absent entries are replaced by zeros before the sum (so a NaN
        or Inf in padding cannot leak into the mean or its gradient) and left out of the count;
        a slice with no present entry gives 0, not NaN (callers that must refuse empty sets check
        that before, e.g. ``_validation.check_mask``).
    """
    if mask is None:
        return x.mean() if dim is None else x.mean(dim)
    m = mask.reshape(*mask.shape, *([1] * (x.dim() - mask.dim())))
    total = torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device))
    count = m.to(x.dtype).expand_as(x)
    if dim is None:
        return total.sum() / count.sum().clamp_min(1.0)
    return total.sum(dim) / count.sum(dim).clamp_min(1.0)
