"""models.attention against hand-written references: a loop over tasks, heads and queries with an
explicit softmax, and torch's own ``nn.MultiheadAttention`` with the same weights (float64)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bayesmeta.exceptions import InvalidValueError, ShapeError
from bayesmeta.models.attention import MultiheadAttention, masked_attention

F64 = torch.float64
TOL = {"rtol": 1e-12, "atol": 1e-12}  # float64: both routes are exact up to summation order


def _loop_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """softmax(q.k / sqrt(d)) v over the present keys, one (task, query) at a time."""
    t_, nq, d = q.shape
    out = torch.zeros(t_, nq, v.shape[-1], dtype=q.dtype)
    for t in range(t_):
        keep = range(k.shape[1]) if mask is None else [s for s in range(k.shape[1]) if bool(mask[t, s])]
        for i in range(nq):
            scores = [float(q[t, i] @ k[t, s]) / math.sqrt(d) for s in keep]
            top = max(scores)
            w = [math.exp(x - top) for x in scores]
            z = sum(w)
            for wi, s in zip(w, keep):
                out[t, i] += (wi / z) * v[t, s]
    return out


def _data(seed: int = 0, t: int = 3, nq: int = 4, s: int = 6, d: int = 5, dv: int = 3):
    g = torch.Generator().manual_seed(seed)
    q = 2 * torch.randn(t, nq, d, generator=g, dtype=F64)
    k = 2 * torch.randn(t, s, d, generator=g, dtype=F64)
    v = torch.randn(t, s, dv, generator=g, dtype=F64)
    mask = torch.ones(t, s, dtype=torch.bool)
    mask[0, 4:] = False
    mask[2, 1:] = False  # a single present key: the output is that key's value
    return q, k, v, mask


def test_masked_attention_matches_a_hand_written_loop() -> None:
    q, k, v, mask = _data()
    torch.testing.assert_close(masked_attention(q, k, v), _loop_attention(q, k, v, None), **TOL)
    torch.testing.assert_close(masked_attention(q, k, v, mask), _loop_attention(q, k, v, mask), **TOL)
    torch.testing.assert_close(masked_attention(q, k, v, mask)[2], v[2, :1].expand(4, -1), **TOL)


def test_masked_attention_matches_torch_sdpa_and_ignores_hidden_garbage() -> None:
    q, k, v, mask = _data(seed=1)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask.unsqueeze(1))
    torch.testing.assert_close(masked_attention(q, k, v, mask), ref, **TOL)
    v2, k2 = v.clone(), k.clone()
    v2[~mask] = float("nan")  # hidden values may hold anything, even NaN
    k2[~mask] = 1e6
    torch.testing.assert_close(masked_attention(q, k2, v2, mask), ref, **TOL)


def test_multihead_attention_matches_a_per_head_loop_and_torch() -> None:
    torch.manual_seed(0)
    dq, dk, dv, h, dh, do = 4, 5, 6, 2, 3, 7
    att = MultiheadAttention(dq, dk, dv, n_heads=h, head_dim=dh, out_dim=do).double()
    q, k, v, mask = _data(seed=2, d=dq)
    k = torch.randn(3, 6, dk, dtype=F64)
    v = torch.randn(3, 6, dv, dtype=F64)
    ours = att(q, k, v, mask)
    assert ours.shape == (3, 4, do)
    # per head: project, attend with 1/sqrt(head_dim), then concatenate heads and map out
    heads = []
    for i in range(h):
        rows = slice(i * dh, (i + 1) * dh)
        heads.append(_loop_attention(q @ att.w_q.weight[rows].T, k @ att.w_k.weight[rows].T, v @ att.w_v.weight[rows].T, mask))
    ref = torch.cat(heads, -1) @ att.w_o.weight.T
    torch.testing.assert_close(ours, ref, **TOL)


def test_multihead_attention_equals_torch_multihead_attention_with_the_same_weights() -> None:
    torch.manual_seed(1)
    e, h = 8, 2
    att = MultiheadAttention(e, e, e, n_heads=h).double()
    peer = nn.MultiheadAttention(e, h, bias=False, batch_first=True).double()
    with torch.no_grad():
        peer.in_proj_weight.copy_(torch.cat([att.w_q.weight, att.w_k.weight, att.w_v.weight]))
        peer.out_proj.weight.copy_(att.w_o.weight)
    q, _, _, mask = _data(seed=3, d=e)
    kv = torch.randn(3, 6, e, dtype=F64)
    ref, _ = peer(q, kv, kv, key_padding_mask=~mask, need_weights=False)
    torch.testing.assert_close(att(q, kv, kv, mask), ref, **TOL)


def test_bad_shapes_and_settings_are_named() -> None:
    att = MultiheadAttention(4, 4, 4, n_heads=2)
    with pytest.raises(ShapeError, match=r"q: expected a \[T, N, 4\]"):
        att(torch.randn(2, 3, 5), torch.randn(2, 3, 4), torch.randn(2, 3, 4))
    with pytest.raises(ShapeError, match="k, v"):
        att(torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.randn(2, 5, 4))
    with pytest.raises(InvalidValueError, match="n_heads"):
        MultiheadAttention(4, 4, 6, n_heads=4)
