"""Backbones (feature extractors with an optional linear head), all safe under ``torch.func.vmap``."""

from bayesmeta.models.conv import Conv4
from bayesmeta.models.mlp import MLP

__all__ = ["Conv4", "MLP"]
