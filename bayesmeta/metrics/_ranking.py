"""Tie groups of sorted values (private): shared by risk-coverage curves and AUROC."""

from __future__ import annotations

import torch

__all__ = ["tie_groups"]


def tie_groups(sorted_vals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First and last position of the run of equal values that each position belongs to.

    Args:
        sorted_vals: ``[..., N]`` sorted ascending along the last dim.

    Returns:
        ``(start, end)``, each ``[..., N]`` int64: for position ``k``, the run of values equal to
        ``sorted_vals[..., k]`` spans positions ``start[..., k] .. end[..., k]`` inclusive.
    """
    n = sorted_vals.shape[-1]
    j = torch.arange(n, device=sorted_vals.device).expand_as(sorted_vals)
    differs = sorted_vals[..., 1:] != sorted_vals[..., :-1]  # [..., N-1]
    true = torch.ones_like(sorted_vals[..., :1], dtype=torch.bool)
    is_start = torch.cat([true, differs], dim=-1)
    is_end = torch.cat([differs, true], dim=-1)
    start = torch.where(is_start, j, torch.zeros_like(j)).cummax(-1).values
    end_rev = torch.where(is_end, j, torch.full_like(j, n - 1)).flip(-1).cummin(-1).values
    return start, end_rev.flip(-1)
