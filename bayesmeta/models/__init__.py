"""Backbones (feature extractors with an optional linear head), all safe under ``torch.func.vmap``."""

from bayesmeta.models._shapes import check_input_shape
from bayesmeta.models.conv import Conv4
from bayesmeta.models.mlp import MLP

__all__ = ["Conv4", "MLP", "check_input_shape"]
