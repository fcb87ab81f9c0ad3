"""Aggregating per-task metric values into a mean with a confidence interval over tasks.

Few-shot results vary far more between tasks than between query points of one task, so the unit
of replication is the task: intervals here resample or average over tasks, never query points.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch

from bayesmeta.exceptions import InvalidValueError

__all__ = ["MeanCI", "mean_ci"]


@dataclass(frozen=True)
class MeanCI:
    """A mean over tasks with its confidence interval.

    Attributes:
        mean: mean over tasks.
        low: lower end of the interval.
        high: upper end of the interval.
        n: number of tasks.
        level: nominal coverage of the interval (e.g. 0.95).
        method: ``"bootstrap"`` (percentile, over tasks) or ``"normal"`` (mean ± z·sd/sqrt(n)).
    """

    mean: float
    low: float
    high: float
    n: int
    level: float
    method: str

    @property
    def half_width(self) -> float:
        """Half the interval's width: the ``±`` figure of few-shot papers."""
        return 0.5 * (self.high - self.low)

    def to_dict(self) -> dict[str, float | int | str]:
        """Plain-JSON form."""
        return asdict(self)

    def format(self, scale: float = 1.0, digits: int = 3) -> str:
        """``"mean ± half_width"`` with the values multiplied by ``scale`` (100 for percent)."""
        return f"{self.mean * scale:.{digits}f} ± {self.half_width * scale:.{digits}f}"


def mean_ci(
    values: torch.Tensor | np.ndarray | list[float],
    level: float = 0.95,
    method: Literal["bootstrap", "normal"] = "bootstrap",
    n_boot: int = 2000,
    seed: int = 0,
) -> MeanCI:
    """Mean of per-task values and a ``level`` confidence interval over tasks.

    Args:
        values: ``[T]`` one value per task (NaN entries are an error: they would hide a bug).
        level: nominal coverage in (0, 1).
        method: ``"bootstrap"`` resamples tasks with replacement ``n_boot`` times (seeded, so the
            interval is reproducible) and takes percentiles; ``"normal"`` uses the normal
            approximation ``mean ± z * sd / sqrt(T)`` customary in few-shot papers.
        n_boot: bootstrap replicates.
        seed: seed of the bootstrap's own generator (global RNG state is untouched).

    Returns:
        A :class:`MeanCI`. With a single task the interval collapses to the mean.
    """
    v = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float64)
    v = v.reshape(-1)
    if v.size == 0:
        raise InvalidValueError("values: expected at least one per-task value, got an empty array")
    if not np.isfinite(v).all():
        raise InvalidValueError(f"values: expected finite per-task values, got {int((~np.isfinite(v)).sum())} non-finite")
    if not 0.0 < level < 1.0:
        raise InvalidValueError(f"level: expected a value in (0, 1), got {level!r}")
    mean = float(v.mean())
    n = int(v.size)
    if n == 1:
        return MeanCI(mean, mean, mean, n, level, method)
    alpha = 1.0 - level
    if method == "normal":
        z = math.sqrt(2.0) * _erfinv(level)
        half = z * float(v.std(ddof=1)) / math.sqrt(n)
        return MeanCI(mean, mean - half, mean + half, n, level, method)
    if method != "bootstrap":
        raise InvalidValueError(f"method: expected 'bootstrap' or 'normal', got {method!r}")
    if n_boot < 1:
        raise InvalidValueError(f"n_boot: expected an integer >= 1, got {n_boot!r}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    boots = v[idx].mean(axis=1)
    low, high = np.quantile(boots, [alpha / 2.0, 1.0 - alpha / 2.0])
    return MeanCI(mean, float(low), float(high), n, level, method)


def _erfinv(y: float) -> float:
    """Inverse error function via torch (avoids a scipy runtime dependency)."""
    return float(torch.special.erfinv(torch.tensor(y, dtype=torch.float64)))
