"""Masked multi-head attention for attentive neural processes (Kim et al., 2019).

Queries attend to a ragged set of keys/values; hidden keys (mask False) get a score of ``-inf``
before the softmax, so their weight is exactly zero and whatever their values hold cannot reach
the output. The layer follows the ANP paper's multi-head attention: per-head linear maps of
queries, keys and values without bias, scaled dot-product attention per head, and a linear
output map summed over heads (no residual, no layer norm).

Written out rather than built on ``nn.MultiheadAttention`` so that the ``[T, Q, D]`` layout, the
``[T, S]`` key mask (True = present, the TaskBatch convention) and float64 all work unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from bayesmeta._validation import check_positive_int, describe
from bayesmeta.exceptions import InvalidValueError, ShapeError

__all__ = ["MultiheadAttention", "masked_attention"]


def masked_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Scaled dot-product attention with a key mask.

    Args:
        q: ``[..., Q, Dk]`` queries.
        k: ``[..., S, Dk]`` keys.
        v: ``[..., S, Dv]`` values.
        key_mask: optional bool, broadcastable to ``[..., 1, S]`` after an unsqueeze of the query
            axis: pass ``[T, S]`` for ``[T, Q, D]`` inputs or ``[T, 1, S]`` for ``[T, H, Q, D]``.
            Every row needs at least one present key.

    Returns:
        ``[..., Q, Dv]``.
    """
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # [..., Q, S]
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask.unsqueeze(-2), float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    if key_mask is not None:
        # hidden values may hold anything; a zero weight times Inf/NaN would still be NaN
        v = torch.where(key_mask.unsqueeze(-1), v, torch.zeros((), dtype=v.dtype, device=v.device))
    return weights @ v


class MultiheadAttention(nn.Module):
    """Multi-head cross-attention from a query set to a masked key/value set.

    Args:
        query_dim: size of the queries' last dim.
        key_dim: size of the keys' last dim.
        value_dim: size of the values' last dim.
        n_heads: H. Each head has ``head_dim`` (default ``value_dim // n_heads``).
        out_dim: output size (default ``value_dim``).
        head_dim: per-head size of the projected queries/keys/values.

    Shapes:
        ``forward``: q ``[T, Q, query_dim]``, k ``[T, S, key_dim]``, v ``[T, S, value_dim]``,
        key_mask ``[T, S]`` -> ``[T, Q, out_dim]``.
    """

    def __init__(
        self,
        query_dim: int,
        key_dim: int,
        value_dim: int,
        n_heads: int = 8,
        out_dim: int | None = None,
        head_dim: int | None = None,
    ) -> None:
        super().__init__()
        for name, val in (("query_dim", query_dim), ("key_dim", key_dim), ("value_dim", value_dim), ("n_heads", n_heads)):
            check_positive_int(name, val)
        if head_dim is None:
            if value_dim % n_heads:
                raise InvalidValueError(
                    f"n_heads: expected a divisor of value_dim = {value_dim} (or pass head_dim), got {n_heads}"
                )
            head_dim = value_dim // n_heads
        check_positive_int("head_dim", head_dim)
        out_dim = value_dim if out_dim is None else check_positive_int("out_dim", out_dim)
        self.n_heads = n_heads
        self.head_dim = head_dim
        self.out_dim = out_dim
        self.query_dim, self.key_dim, self.value_dim = query_dim, key_dim, value_dim
        self.w_q = nn.Linear(query_dim, n_heads * head_dim, bias=False)
        self.w_k = nn.Linear(key_dim, n_heads * head_dim, bias=False)
        self.w_v = nn.Linear(value_dim, n_heads * head_dim, bias=False)
        self.w_o = nn.Linear(n_heads * head_dim, out_dim, bias=False)
        # ANP initialization: normal with std d^-1/2 keeps the initial scores O(1)
        nn.init.normal_(self.w_q.weight, std=query_dim**-0.5)
        nn.init.normal_(self.w_k.weight, std=key_dim**-0.5)
        nn.init.normal_(self.w_v.weight, std=value_dim**-0.5)
        nn.init.normal_(self.w_o.weight, std=(n_heads * head_dim) ** -0.5)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        """``[T, N, H * Dh] -> [T, H, N, Dh]``."""
        t, n, _ = x.shape
        return x.reshape(t, n, self.n_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        for name, t_, d in (("q", q, self.query_dim), ("k", k, self.key_dim), ("v", v, self.value_dim)):
            if t_.dim() != 3 or t_.shape[-1] != d:
                raise ShapeError(f"{name}: expected a [T, N, {d}] tensor, got {describe(t_)}")
        if k.shape[:2] != v.shape[:2] or q.shape[0] != k.shape[0]:
            raise ShapeError(
                f"k, v: expected [T, S, *] with matching T and S (q has T = {q.shape[0]}), "
                f"got {describe(k)} and {describe(v)}"
            )
        qh, kh, vh = self._split(self.w_q(q)), self._split(self.w_k(k)), self._split(self.w_v(v))
        mask = None if key_mask is None else key_mask.unsqueeze(1)  # [T, 1, S] broadcast over heads
        out = masked_attention(qh, kh, vh, mask)  # [T, H, Q, Dh]
        t, _, nq, _ = out.shape
        return self.w_o(out.transpose(1, 2).reshape(t, nq, self.n_heads * self.head_dim))
