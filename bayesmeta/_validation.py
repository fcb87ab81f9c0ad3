"""Boundary checks shared by the library (private).

Validation happens once, where data enters bayesmeta (TaskBatch construction, metric entry
points, learner ``adapt``/``predict``); code inside ``vmap`` assumes checked inputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from bayesmeta.exceptions import ConfigError, InvalidValueError, ShapeError

__all__ = [
    "ArrayLike",
    "as_tensor",
    "check_mask",
    "check_finite",
    "check_ndim",
    "check_size",
    "check_positive_int",
    "describe",
    "option_float",
    "option_int",
]


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


ArrayLike = torch.Tensor | np.ndarray


def as_tensor(name: str, x: object) -> torch.Tensor:
    """``x`` as a tensor (numpy arrays are converted without a copy); anything else is an error."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    raise ShapeError(f"{name}: expected a torch.Tensor or numpy array, got {type(x).__name__}")


def check_mask(mask: ArrayLike | None, shape: torch.Size) -> torch.Tensor | None:
    """Validate an optional presence mask (True = present) of ``shape``; every row needs a point."""
    if mask is None:
        return None
    m = as_tensor("mask", mask)
    if m.dtype != torch.bool:
        raise InvalidValueError(f"mask: expected a bool tensor (True = present), got {describe(m)}")
    if m.shape != shape:
        raise ShapeError(f"mask: expected shape {list(shape)} to match the targets, got {describe(m)}")
    if m.numel() and not bool(m.any(-1).all()):
        raise InvalidValueError("mask: expected at least one present point in every task, got a task with none")
    return m


# ------------------------------------------------------------------ constructor options
# One validator for the options a learner is built with (what a config sets): a bad option is a
# ConfigError in every learner. Arguments of calls (steps=, n_samples= at predict time, data)
# stay InvalidValueError / ShapeError.
def option_int(name: str, value: object, minimum: int) -> int:
    """Return ``value`` if it is an int >= ``minimum`` (not a bool), else raise :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return value


def option_float(name: str, value: object, allow_zero: bool = False) -> float:
    """Return ``float(value)`` if it is a finite number > 0 (>= 0 with ``allow_zero``), else raise :class:`ConfigError`."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)  # type: ignore[operator]
    if not ok:
        want = "a finite float >= 0" if allow_zero else "a positive finite float"
        raise ConfigError(f"{name}: expected {want}, got {value!r}")
    return float(value)  # type: ignore[arg-type]
