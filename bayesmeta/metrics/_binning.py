"""Confidence binning shared by ECE, MCE, classwise ECE and reliability diagrams (private).

All functions are batched: confidences ``[..., N]`` are binned independently per leading index
(one task, or one task and class), so per-task calibration errors need no Python loop.

Bins:

- ``"equal_width"``: ``K`` bins ``[b/K, (b+1)/K)`` on ``[0, 1]``, the last one closed at 1. The
  edges are ``torch.linspace(0, 1, K + 1)`` and a point's bin is the one whose edges bracket it,
  the construction of torchmetrics (``torch.bucketize(..., right=True)``), so both libraries put
  every confidence below one in the same bin. (torchmetrics
  gives a confidence of exactly 1.0 an extra, ``K+1``-th bin; here it belongs to the last bin.)
- ``"equal_mass"`` (adaptive): the points, sorted by confidence (stable sort), are split into
  ``K`` consecutive groups whose sizes differ by at most one, the larger groups first — the split
  of ``numpy.array_split``. With fewer than ``K`` points some bins stay empty.
"""

from __future__ import annotations

from typing import Literal

import torch

from bayesmeta._validation import check_positive_int
from bayesmeta.exceptions import InvalidValueError

__all__ = ["Binning", "BINNINGS", "check_binning", "bin_index", "bin_stats"]

Binning = Literal["equal_width", "equal_mass"]
BINNINGS: tuple[str, ...] = ("equal_width", "equal_mass")


def check_binning(n_bins: int, binning: str) -> None:
    """Validate ``n_bins`` (int >= 1) and ``binning`` (one of :data:`BINNINGS`)."""
    check_positive_int("n_bins", n_bins)
    if binning not in BINNINGS:
        raise InvalidValueError(f"binning: expected one of {list(BINNINGS)}, got {binning!r}")


def bin_index(conf: torch.Tensor, mask: torch.Tensor | None, n_bins: int, binning: str) -> torch.Tensor:
    """Bin of every confidence, ``[..., N]`` int64 in ``[0, n_bins)``.

    Args:
        conf: ``[..., N]`` confidences in ``[0, 1]``.
        mask: ``[..., N]`` bool (True = present) or None; absent points get some valid bin and
            must be given zero weight by the caller.
        n_bins: K.
        binning: ``"equal_width"`` or ``"equal_mass"``.
    """
    if binning == "equal_width":
        # Same bins as bucketize(conf, linspace(0, 1, K + 1), right=True) - 1, at a quarter of its
        # cost: floor(conf * K) is off by at most one where rounding differs from the edges, and
        # the two comparisons against the exact edges correct that.
        # The corrections subtract/add the comparisons' bool results in place (no int64 copies of
        # them), and the upper edge is looked up in a view of the edges (no ``idx + 1`` tensor).
        edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=conf.dtype, device=conf.device)
        idx = (conf * n_bins).long().clamp_(0, n_bins - 1)
        idx.add_(conf < edges[idx], alpha=-1)  # (`-=` refuses a bool operand)
        idx += conf >= edges[1:][idx]
        return idx.clamp_(0, n_bins - 1)
    n_points = conf.shape[-1]
    key = conf if mask is None else conf.masked_fill(~mask, float("inf"))
    order = torch.argsort(key, dim=-1, stable=True)
    if mask is None:
        n = torch.full((*conf.shape[:-1], 1), n_points, dtype=torch.long, device=conf.device)
    else:
        n = mask.sum(-1, keepdim=True)
    j = torch.arange(n_points, device=conf.device).expand_as(order)
    q, r = n // n_bins, n % n_bins
    big = r * (q + 1)  # positions [0, big) form the r bins of size q + 1
    sorted_bin = torch.where(j < big, j // (q + 1), r + (j - big) // q.clamp_min(1)).clamp(0, n_bins - 1)
    return torch.empty_like(order).scatter_(-1, order, sorted_bin)


def bin_stats(
    conf: torch.Tensor,
    hit: torch.Tensor,
    mask: torch.Tensor | None,
    n_bins: int,
    binning: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-bin point count, sum of confidences and sum of hits.

    Args:
        conf: ``[..., N]`` confidences.
        hit: ``[..., N]`` 1.0 where the event happened (top-1 prediction correct, or the class
            occurred), else 0.0; same dtype as ``conf``.
        mask: ``[..., N]`` bool or None.
        n_bins: K.
        binning: ``"equal_width"`` or ``"equal_mass"``.

    Returns:
        ``(count, sum_conf, sum_hit)``, each ``[..., K]`` in ``conf``'s dtype.
    """
    idx = bin_index(conf, mask, n_bins, binning)
    lead, n = conf.shape[:-1], conf.shape[-1]
    idx2 = idx.reshape(-1, n)
    if mask is None:
        w = conf.new_ones(()).expand_as(conf)  # counts: a stride-0 view, no N-sized tensor of ones
    else:
        w = mask.to(conf.dtype)
        conf = conf * w
        hit = hit * w
    out = []
    for src in (w, conf, hit):
        acc = torch.zeros(idx2.shape[0], n_bins, dtype=conf.dtype, device=conf.device)
        acc.scatter_add_(1, idx2, src.reshape(-1, n))
        out.append(acc.reshape(*lead, n_bins))
    return out[0], out[1], out[2]
