"""Paired comparisons over the same evaluation tasks: which run, if any, is *significantly* best.

Runs evaluated on identical episodes (equal episode fingerprints) give one value per task each,
aligned task by task. Between-task spread dominates few-shot results, so an unpaired comparison
of means (or of overlapping CIs) is both weak and the wrong question; the paired difference per
task removes the task effect. :func:`paired_bootstrap` resamples *tasks* (the same indices for both
runs) and gives the bootstrap distribution of the difference of the aggregate statistic:

- ``lower``/``higher``-is-better metrics: the difference of means over tasks;
- ``nominal`` metrics (coverage -> 0.9): the difference of ``|mean - target|``.

:func:`select_best` marks a run best for a metric only when it beats *every* other run of the
group with Holm-corrected two-sided p-values below ``alpha``; otherwise no run is marked.
The tests cross-check the interval against ``scipy.stats.bootstrap(paired=True)`` and the decisions
against the Wilcoxon signed-rank test.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from bayesmeta.exceptions import InvalidValueError, ShapeError

__all__ = ["PairedTest", "paired_bootstrap", "select_best", "holm"]

N_RESAMPLES = 10_000
ALPHA = 0.05


@dataclass(frozen=True)
class PairedTest:
    """A paired bootstrap comparison of run ``a`` against run ``b``.

    Attributes:
        diff: statistic(a) - statistic(b) on the observed tasks.
        low, high: percentile interval of the difference at ``level``.
        p_value: two-sided bootstrap p-value of "no difference", ``(1 + #crossings) / (1 + B)``.
        n_tasks: tasks used (those where both runs have a finite value).
        level: interval level.
    """

    diff: float
    low: float
    high: float
    p_value: float
    n_tasks: int
    level: float

    def to_dict(self) -> dict[str, float | int]:
        """Plain-JSON form."""
        return {"diff": self.diff, "low": self.low, "high": self.high, "p_value": self.p_value,
                "n_tasks": self.n_tasks, "level": self.level}


def _stat(x: np.ndarray, target: float | None) -> np.ndarray:
    m = x.mean(axis=-1)
    return m if target is None else np.abs(m - target)


def paired_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    *,
    target: float | None = None,
    n_resamples: int = N_RESAMPLES,
    level: float = 0.95,
    seed: int = 0,
) -> PairedTest:
    """Paired bootstrap over tasks of ``stat(a) - stat(b)``.

    Args:
        a, b: ``[T]`` per-task values of two runs on the same T tasks, in the same order.
        target: ``None`` compares means; a number compares ``|mean - target|`` (nominal metrics).
        n_resamples: bootstrap resamples B (seeded; the result is reproducible).
        level: level of the percentile interval.
        seed: seed of the resampling.

    Raises:
        ShapeError: ``a`` and ``b`` are not 1-d of equal length.
        InvalidValueError: fewer than 2 tasks with finite values in both, or a bad ``level``.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ShapeError(f"a, b: expected two 1-d arrays of equal length (paired per task), got {a.shape} and {b.shape}")
    if not 0 < level < 1:
        raise InvalidValueError(f"level: expected a number in (0, 1), got {level!r}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    t = a.size
    if t < 2:
        raise InvalidValueError(f"a, b: expected at least 2 tasks with finite values in both, got {t}")
    rng = np.random.default_rng(seed)
    diff = float(_stat(a, target) - _stat(b, target))
    # resample in chunks: [chunk, T] indices, shared by a and b (the pairing)
    draws = np.empty(n_resamples)
    chunk = max(1, 2_000_000 // t)
    for start in range(0, n_resamples, chunk):
        idx = rng.integers(0, t, size=(min(chunk, n_resamples - start), t))
        draws[start : start + idx.shape[0]] = _stat(a[idx], target) - _stat(b[idx], target)
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    if np.all(a == b):
        p = 1.0
    else:
        below, above = int((draws <= 0).sum()), int((draws >= 0).sum())
        p = min(1.0, 2 * (1 + min(below, above)) / (1 + n_resamples))
    return PairedTest(diff, float(lo), float(hi), p, t, level)


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def select_best(
    values: Mapping[str, np.ndarray],
    better: str,
    target: float | None = None,
    *,
    alpha: float = ALPHA,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> tuple[str | None, dict[str, PairedTest]]:
    """The significantly best run for one metric, or ``None``.

    Args:
        values: label -> ``[T]`` per-task values, all on the same tasks in the same order.
        better: ``"lower"``, ``"higher"`` or ``"nominal"`` (closest to ``target``).
        target: the nominal value for ``"nominal"``.
        alpha: family-wise level of the Holm-corrected comparisons of the leader with each other run.

    Returns:
        ``(best label or None, {other label: PairedTest of leader vs other})``; the leader is the
        run with the best aggregate; it is returned only if every comparison is significant.
    """
    if better not in ("lower", "higher", "nominal"):
        raise InvalidValueError(f"better: expected 'lower', 'higher' or 'nominal', got {better!r}")
    labels = [k for k, v in values.items() if np.isfinite(np.asarray(v, dtype=np.float64)).sum() >= 2]
    if len(labels) < 2:
        return None, {}
    tgt = target if better == "nominal" else None

    def score(label: str) -> float:
        v = np.asarray(values[label], dtype=np.float64)
        m = float(np.nanmean(v))
        return -m if better == "higher" else (abs(m - float(target or 0.0)) if better == "nominal" else m)

    leader = min(labels, key=score)
    tests = {
        other: paired_bootstrap(values[leader], values[other], target=tgt, n_resamples=n_resamples, seed=seed)
        for other in labels
        if other != leader
    }
    adjusted = holm([t.p_value for t in tests.values()])
    return (leader if all(p < alpha for p in adjusted) else None), tests
