"""Input-shape checks against a backbone's declared ``input_shape`` (private).

Backbones declare the per-example shape they accept as ``input_shape`` (``None`` entries are
free), so a learner can refuse a mismatched batch with a message naming the argument, instead of
letting a matmul deep inside torch fail.
"""

from __future__ import annotations

import torch
from torch import nn

from bayesmeta.exceptions import ShapeError

__all__ = ["check_input_shape"]


def check_input_shape(model: nn.Module, x: torch.Tensor, name: str, lead: int = 2) -> None:
    """Raise :class:`ShapeError` unless ``x``'s trailing dims fit ``model.input_shape``.

    Args:
        model: a backbone, optionally with ``input_shape: tuple[int | None, ...]``.
        x: inputs with ``lead`` leading dims (``[T, N, ...]`` by default).
        name: the argument name for the message (``support_x``, ``query_x``).
        lead: number of leading batch dims before the per-example shape.
    """
    want = getattr(model, "input_shape", None)
    if want is None:
        return
    got = tuple(x.shape[lead:])
    ok = len(got) == len(want) and all(w is None or w == g for w, g in zip(want, got))
    if not ok:
        shown = "[" + ", ".join("*" if w is None else str(w) for w in want) + "]"
        raise ShapeError(
            f"{name}: {type(model).__name__} expects examples of shape {shown}, got {list(got)} "
            f"(full shape {list(x.shape)})"
        )
