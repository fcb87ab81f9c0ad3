"""Boundary checks shared by the library (private).

Validation happens once, where data enters bayesmeta (TaskBatch construction, metric entry
points, learner ``adapt``/``predict``); code inside ``vmap`` assumes checked inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from bayesmeta.exceptions import InvalidValueError, ShapeError

__all__ = ["check_finite", "check_ndim", "check_size", "check_positive_int", "describe"]


def describe(t: torch.Tensor) -> str:
    """A short description of a tensor for error messages: ``shape [2, 3] float32``."""
    return f"shape {list(t.shape)} {str(t.dtype).removeprefix('torch.')}"


def check_finite(name: str, t: torch.Tensor) -> None:
    """Raise :class:`InvalidValueError` naming ``name`` if ``t`` holds NaN or Inf."""
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        n_nan = int(torch.isnan(t).sum())
        n_inf = int(torch.isinf(t).sum())
        raise InvalidValueError(
            f"{name}: expected finite values, got {n_nan} NaN and {n_inf} Inf entries "
            f"in a tensor of {describe(t)}"
        )


def check_ndim(name: str, t: torch.Tensor, ndims: int | Sequence[int], layout: str = "") -> None:
    """Raise :class:`ShapeError` unless ``t.dim()`` is one of ``ndims``."""
    allowed = (ndims,) if isinstance(ndims, int) else tuple(ndims)
    if not isinstance(t, torch.Tensor):
        raise ShapeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dim() not in allowed:
        want = " or ".join(str(a) for a in allowed)
        hint = f" ({layout})" if layout else ""
        raise ShapeError(f"{name}: expected a {want}-d tensor{hint}, got {describe(t)}")


def check_size(name: str, t: torch.Tensor, dim: int, size: int, what: str) -> None:
    """Raise :class:`ShapeError` unless ``t.shape[dim] == size``; ``what`` names that size."""
    if t.shape[dim] != size:
        raise ShapeError(
            f"{name}: expected size {size} along dim {dim} ({what}), got {describe(t)}"
        )


def check_positive_int(name: str, value: int, minimum: int = 1) -> int:
    """Return ``value`` if it is an int >= ``minimum``, else raise :class:`InvalidValueError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return value
