"""bayesmeta.masked.masked_mean against a per-task loop over the present points only."""

from __future__ import annotations

import math

import pytest
import torch

from bayesmeta.masked import masked_mean


def _ragged(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 7, 3, generator=g, dtype=torch.float64)
    mask = torch.rand(4, 7, generator=g) < 0.6
    mask[:, 0] = True  # every task keeps at least one point
    return x, mask


def test_per_task_mean_over_points_equals_a_loop_over_present_points() -> None:
    x, mask = _ragged()
    got = masked_mean(x, mask, dim=1)  # [T, D]: the [T, N] mask covers the trailing feature dim
    want = torch.stack([x[t][mask[t]].mean(0) for t in range(x.shape[0])])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-14)  # float64 sums of <= 7 terms


def test_last_dim_and_full_reductions() -> None:
    x, mask = _ragged(1)
    v = x[..., 0]  # [T, N]
    torch.testing.assert_close(masked_mean(v, mask, dim=-1), torch.stack([v[t][mask[t]].mean() for t in range(4)]))
    torch.testing.assert_close(masked_mean(v, mask), v[mask].mean())
    torch.testing.assert_close(masked_mean(v, None, dim=-1), v.mean(-1))
    torch.testing.assert_close(masked_mean(v), v.mean())


def test_garbage_in_padding_reaches_neither_value_nor_gradient() -> None:
    x, mask = _ragged(2)
    v = x[..., 0].clone()
    v[~mask] = math.nan
    v.requires_grad_(True)
    out = masked_mean(v, mask, dim=-1).sum()
    out.backward()
    assert torch.isfinite(out)
    assert v.grad is not None and bool(torch.isfinite(v.grad).all())
    assert bool((v.grad[~mask] == 0).all())
    # each present point of task t gets 1 / n_t
    torch.testing.assert_close(v.grad[mask], (1.0 / mask.sum(-1, keepdim=True).double()).expand_as(v)[mask])


@pytest.mark.parametrize("dim", [-1, None])
def test_an_empty_slice_gives_zero_not_nan(dim: int | None) -> None:
    v = torch.ones(2, 3)
    mask = torch.zeros(2, 3, dtype=torch.bool)
    assert bool((masked_mean(v, mask, dim=dim) == 0).all())
