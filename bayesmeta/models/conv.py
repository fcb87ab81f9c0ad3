"""The Conv4 backbone of MAML / ProtoNets for 28x28 images."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from bayesmeta._validation import check_positive_int
from bayesmeta.exceptions import ConfigError

__all__ = ["BatchStatNorm2d", "Conv4"]

Norm = Literal["batch", "group", "none"]


class BatchStatNorm2d(nn.Module):
    """Batch normalization with batch statistics only (no running averages), from plain ops.

    Numerically the same as ``nn.BatchNorm2d(track_running_stats=False)`` in training mode, which
    is the original MAML's behaviour. It is written out because, on torch 2.13, the second-order
    gradient of ``F.batch_norm`` under ``torch.func.grad`` is wrong (off by a few percent against
    per-task ``torch.autograd`` and finite differences, found while writing
    tests/inference/test_maml_gradients.py), while
    these elementary ops differentiate correctly to any order and under ``vmap``.

    Shapes:
        ``[N, C, H, W] -> [N, C, H, W]``, statistics over N, H and W.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        var = ((x - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)
        xhat = (x - mean) * torch.rsqrt(var + self.eps)
        return xhat * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def _norm(kind: Norm, channels: int) -> nn.Module:
    # Batch statistics without running averages is the original MAML behaviour and the only
    # batch norm that is safe under vmap (no buffers to write); GroupNorm is per-example.
    if kind == "batch":
        return BatchStatNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"norm: expected one of 'batch', 'group', 'none', got {kind!r}")


class Conv4(nn.Module):
    """Four blocks of conv3x3(``hidden``) -> norm -> ReLU -> maxpool2, then an optional linear head.

    A 28x28 input shrinks to 14, 7, 3, 1, so the flattened feature size is ``hidden``.

    Args:
        in_channels: image channels (1 for Omniglot).
        out_features: size of the linear head (C logits for MAML); ``None`` for an embedding
            network without head (ProtoNets), whose output is the ``hidden``-d features.
        hidden: filters per block (64 in the papers).
        norm: ``"batch"`` (no running statistics, transductive as in MAML), ``"group"`` or ``"none"``.

    Shapes:
        ``forward``: ``[N, in_channels, 28, 28] -> [N, out_features or hidden]``.
        Leading dims beyond one batch dim are flattened and restored.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_features: int | None = None,
        hidden: int = 64,
        norm: Norm = "batch",
    ) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_positive_int("hidden", hidden)
        blocks: list[nn.Module] = []
        ch = in_channels
        for _ in range(4):
            blocks += [nn.Conv2d(ch, hidden, 3, padding=1), _norm(norm, hidden), nn.ReLU(), nn.MaxPool2d(2)]
            ch = hidden
        self.body = nn.Sequential(*blocks, nn.Flatten())
        self.feature_dim = hidden
        self.in_channels = in_channels
        self.out_features = out_features
        # With a head, only 28x28 inputs shrink to the 1x1 map the head is sized for; without
        # one, any image of at least 16x16 gives (larger) embeddings.
        self.input_shape: tuple[int | None, ...] = (in_channels, 28, 28) if out_features is not None else (in_channels, None, None)
        self.head: nn.Module | None = None
        if out_features is not None:
            check_positive_int("out_features", out_features)
            self.head = nn.Linear(hidden, out_features)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened conv features, ``[..., C, H, W] -> [..., hidden]``."""
        lead = x.shape[:-3]
        f = self.body(x.reshape(-1, *x.shape[-3:]))
        return f.reshape(*lead, f.shape[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        return f if self.head is None else self.head(f)
