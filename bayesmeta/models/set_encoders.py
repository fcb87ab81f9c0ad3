"""Permutation-invariant set encoders for amortized inference (neural processes, VERSA).

A set encoder maps a ragged set of points ``[T, N, D]`` with an optional presence mask ``[T, N]``
to one vector per task ``[T, R]``: a per-point network followed by a *masked* mean. Mean pooling
makes the result invariant to the order of the points, and the mask makes it blind to padding:
hidden points are replaced by zeros before the sum (``torch.where``, so even non-finite garbage
cannot leak) and are left out of the count.

Everything here is a plain ``nn.Module`` without buffers, safe under ``torch.func.vmap``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from bayesmeta._validation import check_positive_int, describe
from bayesmeta.exceptions import InvalidValueError, ShapeError
from bayesmeta.masked import masked_mean  # re-exported: the set encoders' pooling
from bayesmeta.models.attention import MultiheadAttention

__all__ = [
    "PointwiseMLP",
    "SelfAttentionBlock",
    "DeepSetEncoder",
    "GaussianSetEncoder",
    "masked_mean",
    "masked_class_mean",
    "check_class_counts",
]


def check_class_counts(onehot: torch.Tensor) -> torch.Tensor:
    """Per-class counts ``[T, C]`` of masked one-hot labels ``[T, S, C]``; every class must be present.

    Raises:
        InvalidValueError: a class of some task has no present support example; the message
            names the class and the task.
    """
    counts = onehot.sum(1)  # [T, C]
    empty = (counts == 0).nonzero()
    if empty.numel():
        t, c = empty[0].tolist()
        raise InvalidValueError(
            f"support_y: expected at least one support example per class (n_way = {onehot.shape[-1]}), "
            f"but class {c} of task {t} has none ({empty.shape[0]} empty class(es) in all)"
        )
    return counts


def masked_class_mean(
    features: torch.Tensor,
    labels: torch.Tensor,
    n_way: int,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class mean of the features, batched over tasks.

    Args:
        features: ``[T, S, D]``.
        labels: ``[T, S]`` int64 in ``[0, n_way)``.
        n_way: C.
        mask: optional ``[T, S]`` bool; hidden points do not count.

    Returns:
        ``(means [T, C, D], counts [T, C])``.

    Raises:
        InvalidValueError: a class of some task has no present support example; the message
            names the class and the task.
    """
    onehot = nn.functional.one_hot(labels, n_way).to(features.dtype)  # [T, S, C]
    if mask is not None:
        onehot = onehot * mask.unsqueeze(-1).to(features.dtype)
    counts = check_class_counts(onehot)
    # hidden points may hold garbage: zero them explicitly rather than trusting 0 * garbage
    if mask is not None:
        features = torch.where(mask.unsqueeze(-1), features, torch.zeros((), dtype=features.dtype))
    means = torch.einsum("tsc,tsd->tcd", onehot, features) / counts.unsqueeze(-1)
    return means, counts


class PointwiseMLP(nn.Module):
    """An MLP applied to the last dimension: ``[..., in] -> [..., out]``.

    ReLU between layers, none after the last one (the ANP paper's ``batch_mlp``).

    Args:
        in_features: size of the input's last dimension.
        sizes: widths of every layer, the last one being the output width.
        activation: module class used between layers.
    """

    def __init__(
        self, in_features: int, sizes: Sequence[int], activation: type[nn.Module] = nn.ReLU
    ) -> None:
        super().__init__()
        check_positive_int("in_features", in_features)
        if len(sizes) == 0:
            raise InvalidValueError("sizes: expected at least one layer width, got an empty sequence")
        layers: list[nn.Module] = []
        width = in_features
        for i, s in enumerate(sizes):
            check_positive_int("sizes", s)
            layers.append(nn.Linear(width, s))
            if i < len(sizes) - 1:
                layers.append(activation())
            width = s
        self.net = nn.Sequential(*layers)
        self.in_features = in_features
        self.out_features = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SelfAttentionBlock(nn.Module):
    """``LayerNorm(h + MultiheadAttention(h, h, h))`` over a masked set (a transformer block
    without the feed-forward part).

    Hidden points still get an output row (computed from the present points) but never act as
    keys, so they cannot influence present points; later pooling drops their rows.

    Shapes:
        ``forward``: ``[T, N, dim]``, mask ``[T, N]`` -> ``[T, N, dim]``.
    """

    def __init__(self, dim: int, n_heads: int = 8) -> None:
        super().__init__()
        self.attention = MultiheadAttention(dim, dim, dim, n_heads)
        self.norm = nn.LayerNorm(dim)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.norm(h + self.attention(h, h, h, mask))


class DeepSetEncoder(nn.Module):
    """``rho(masked_mean_i phi(x_i))``: a Deep Sets encoder (Zaheer et al., 2017).

    Args:
        in_features: per-point input size (``x_dim + y_dim`` for a neural process).
        hidden: widths of ``phi``; its last width is the pooled size.
        post: widths of ``rho`` applied after pooling (``()``: no post-network).
        self_attention_heads: if > 0, a masked :class:`SelfAttentionBlock` with that many heads
            mixes the per-point encodings before pooling (the ANP paper's self-attentive
            encoder); still permutation invariant.

    Shapes:
        ``forward``: ``[T, N, in_features]``, mask ``[T, N]`` -> ``[T, out_features]``.
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        post: Sequence[int] = (),
        self_attention_heads: int = 0,
    ) -> None:
        super().__init__()
        self.phi = PointwiseMLP(in_features, hidden)
        self.mixer: SelfAttentionBlock | None = None
        if self_attention_heads:
            self.mixer = SelfAttentionBlock(self.phi.out_features, self_attention_heads)
        self.rho: nn.Module | None = None
        self.out_features = self.phi.out_features
        if len(post) > 0:
            # ReLU between pooling and rho: phi's last layer is linear
            self.rho = nn.Sequential(nn.ReLU(), PointwiseMLP(self.phi.out_features, post))
            self.out_features = post[-1]

    def pointwise(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Per-point encodings before pooling, ``[T, N, hidden[-1]]``."""
        if h.dim() != 3:
            raise ShapeError(f"set: expected a [T, N, D] tensor, got {describe(h)}")
        e = self.phi(h)
        return e if self.mixer is None else self.mixer(e, mask)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        r = masked_mean(self.pointwise(h, mask), mask, dim=1)
        return r if self.rho is None else self.rho(r)


class GaussianSetEncoder(nn.Module):
    """A set encoder whose output is a diagonal Gaussian ``q(z | set)`` (the NP latent path).

    Architecture of the ANP paper's latent encoder: ``phi`` MLP per point, masked mean, one
    hidden ReLU layer of width ``(width + z_dim) // 2``, then linear heads for the mean and the
    raw scale. The standard deviation is ``min_std + (1 - min_std) * sigmoid(raw)`` (ANP paper:
    ``0.1 + 0.9 sigmoid``), bounded in ``(min_std, 1)``: the lower bound keeps the KL finite and
    the upper bound matches the unit scale of the reparameterization noise.

    Args:
        in_features: per-point input size.
        hidden: widths of ``phi``.
        z_dim: latent size Dz.
        min_std: lower bound of the standard deviation, in ``[0, 1)``.
        self_attention_heads: see :class:`DeepSetEncoder`.

    Shapes:
        ``forward``: ``[T, N, in_features]``, mask ``[T, N]`` -> ``(mean [T, Dz], std [T, Dz])``.
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        z_dim: int,
        min_std: float = 0.1,
        self_attention_heads: int = 0,
    ) -> None:
        super().__init__()
        check_positive_int("z_dim", z_dim)
        if not 0.0 <= float(min_std) < 1.0:
            raise InvalidValueError(f"min_std: expected a value in [0, 1), got {min_std!r}")
        self.pool = DeepSetEncoder(in_features, hidden, self_attention_heads=self_attention_heads)
        mid = max(1, (self.pool.out_features + z_dim) // 2)
        self.hidden = nn.Sequential(nn.ReLU(), nn.Linear(self.pool.out_features, mid), nn.ReLU())
        self.mean_head = nn.Linear(mid, z_dim)
        self.scale_head = nn.Linear(mid, z_dim)
        self.z_dim = z_dim
        self.min_std = float(min_std)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.hidden(self.pool(h, mask))
        std = self.min_std + (1.0 - self.min_std) * torch.sigmoid(self.scale_head(s))
        return self.mean_head(s), std
