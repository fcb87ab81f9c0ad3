"""Regression metrics for a uniform mixture of M diagonal Gaussians.

Every function takes ``(pred, y)``:

- ``pred``: a :class:`~bayesmeta.predictive.GaussianPredictive` (``[M, T, Q, Dy]`` members) or a
  ``(mean, variance)`` pair of ``[..., N, Dy]`` tensors describing one Gaussian per point;
- ``y``: targets ``[T, Q, Dy]`` / ``[..., N, Dy]`` (``[T, Q]`` is accepted when ``Dy = 1``);
- ``mask``: optional bool ``[T, Q]`` / ``[..., N]``, True where a point is present.

The point dim (Q or N) is averaged over and the leading dims are kept, so a predictive gives
per-task values ``[T]``. Over the output dims Dy: the NLL uses the joint density (a sum of
per-dimension log densities within each member); MSE, CRPS, PIT error, coverage and sharpness
average over Dy.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from bayesmeta._validation import check_positive_int
from bayesmeta.exceptions import InvalidValueError
from bayesmeta.gaussian import gaussian_log_density
from bayesmeta.masked import masked_mean
from bayesmeta.metrics._inputs import ArrayLike, GaussInputs, gauss_inputs
from bayesmeta.predictive import GaussianPredictive

__all__ = [
    "gaussian_nll",
    "mse",
    "pit",
    "pit_calibration_error",
    "pit_histogram",
    "coverage",
    "interval_coverage",
    "interval_coverage_error",
    "crps",
    "crps_gaussian",
    "sharpness",
]

GaussLike = GaussianPredictive | tuple[ArrayLike, ArrayLike]

_INV_SQRT_PI = 1.0 / math.sqrt(math.pi)


def _point_mean(x: torch.Tensor, g: GaussInputs) -> torch.Tensor:
    """Average ``x`` ``[..., N, Dy]`` over Dy, then over present points: ``[...]``."""
    return masked_mean(x.mean(-1), g.mask, dim=-1)


def gaussian_nll(pred: GaussLike, y: ArrayLike, mask: ArrayLike | None = None) -> torch.Tensor:
    """Mean negative log density of ``y`` under the mixture (nats, summed over Dy), ``[...]``."""
    g = gauss_inputs(pred, y, mask)
    comp = gaussian_log_density(g.y, g.mean, g.variance).sum(-1)
    lp = torch.logsumexp(comp, dim=0) - math.log(g.n_samples)
    return masked_mean(-lp, g.mask, dim=-1)


def mse(pred: GaussLike, y: ArrayLike, mask: ArrayLike | None = None) -> torch.Tensor:
    """Mean squared error of the mixture mean, averaged over Dy and points, ``[...]``."""
    g = gauss_inputs(pred, y, mask)
    return _point_mean((g.mixture_mean - g.y) ** 2, g)


def _pit(g: GaussInputs) -> torch.Tensor:
    return torch.special.ndtr((g.y - g.mean) / g.variance.sqrt()).mean(0)


def pit(pred: GaussLike, y: ArrayLike) -> torch.Tensor:
    """Probability integral transform ``F(y)`` per point and output dim, ``[..., N, Dy]``.

    For a calibrated predictive and ``y`` drawn from it the values are Uniform(0, 1).
    """
    return _pit(gauss_inputs(pred, y, None))


def pit_calibration_error(pred: GaussLike, y: ArrayLike, mask: ArrayLike | None = None) -> torch.Tensor:
    """Wasserstein-1 distance between the PIT values' empirical distribution and Uniform(0, 1).

    ``integral_0^1 |F_n(u) - u| du``, where ``F_n`` is the empirical CDF of a task's PIT values
    (per output dim, then averaged over Dy). It is the area between the PIT's CDF and the
    diagonal, needs no binning, lies in ``[0, 1/2]`` and is ``O(1/sqrt(N))`` for a calibrated
    predictive. Computed exactly from the sorted values: the k-th smallest ``u_(k)`` contributes
    ``integral_{(k-1)/n}^{k/n} |u_(k) - t| dt``.

    Returns:
        ``[...]``.
    """
    g = gauss_inputs(pred, y, mask)
    u = _pit(g).movedim(-1, -2)  # [..., Dy, N]
    n_points = u.shape[-1]
    if g.mask is None:
        n = torch.full((*u.shape[:-1], 1), float(n_points), dtype=u.dtype, device=u.device)
        present = None
    else:
        present = g.mask.unsqueeze(-2).expand_as(u)
        n = present.sum(-1, keepdim=True).to(u.dtype)
        u = u.masked_fill(~present, 2.0)  # absent points sort last
    u = u.sort(-1).values
    k = torch.arange(n_points, dtype=u.dtype, device=u.device)
    a, b = k / n, (k + 1) / n
    d1, d2 = u - a, b - u
    piece = 0.5 * (d1 * d1.abs() + d2 * d2.abs())
    if present is not None:
        piece = torch.where(k < n, piece, torch.zeros_like(piece))
    return piece.sum(-1).mean(-1)


def pit_histogram(
    pred: GaussLike, y: ArrayLike, n_bins: int = 10, mask: ArrayLike | None = None
) -> torch.Tensor:
    """Counts of the PIT values of all points, tasks and output dims pooled, ``[n_bins]`` int64.

    Bins are ``[b/K, (b+1)/K)``, the last one closed at 1; a calibrated predictive gives a flat
    histogram.
    """
    check_positive_int("n_bins", n_bins)
    g = gauss_inputs(pred, y, mask)
    u = _pit(g)
    if g.mask is not None:
        u = u[g.mask]
    idx = (u.reshape(-1) * n_bins).floor().long().clamp(0, n_bins - 1)
    return torch.bincount(idx, minlength=n_bins)


def _check_level(level: float) -> float:
    if isinstance(level, bool) or not isinstance(level, int | float) or not 0.0 < float(level) < 1.0:
        raise InvalidValueError(f"level: expected a nominal coverage in (0, 1), got {level!r}")
    return float(level)


def _covered(u: torch.Tensor, level: float) -> torch.Tensor:
    a = (1.0 - level) / 2.0
    return ((u >= a) & (u <= 1.0 - a)).to(u.dtype)


def coverage(pred: GaussLike, y: ArrayLike, level: float = 0.9, mask: ArrayLike | None = None) -> torch.Tensor:
    """Fraction of targets inside the central ``level`` interval of the predictive, ``[...]``.

    ``y`` lies in the central interval ``[F^-1((1-level)/2), F^-1((1+level)/2)]`` exactly when its
    PIT value lies in ``[(1-level)/2, (1+level)/2]`` (the mixture CDF is continuous and strictly
    increasing), which is how it is computed: no quantile search. Averaged over Dy and points.
    """
    lvl = _check_level(level)
    g = gauss_inputs(pred, y, mask)
    return _point_mean(_covered(_pit(g), lvl), g)


def interval_coverage(
    pred: GaussLike,
    y: ArrayLike,
    levels: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95),
    mask: ArrayLike | None = None,
) -> torch.Tensor:
    """Empirical coverage of central intervals at several nominal levels, ``[..., L]``.

    Compare each entry with its nominal level: above it, the predictive is under-confident.
    """
    lvls = [_check_level(v) for v in levels]
    if not lvls:
        raise InvalidValueError("levels: expected at least one nominal level, got none")
    g = gauss_inputs(pred, y, mask)
    u = _pit(g)
    return torch.stack([_point_mean(_covered(u, v), g) for v in lvls], dim=-1)


def interval_coverage_error(
    pred: GaussLike,
    y: ArrayLike,
    levels: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95),
    mask: ArrayLike | None = None,
) -> torch.Tensor:
    """Mean absolute gap between empirical and nominal coverage over ``levels``, ``[...]``."""
    cov = interval_coverage(pred, y, levels, mask)
    nominal = torch.tensor([float(v) for v in levels], dtype=cov.dtype, device=cov.device)
    return (cov - nominal).abs().mean(-1)


def _abs_normal_mean(mu: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """``E|Z|`` for ``Z ~ N(mu, var)``: ``2 s phi(mu/s) + mu (2 Phi(mu/s) - 1)``."""
    s = var.sqrt()
    z = mu / s
    pdf = torch.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return 2.0 * s * pdf + mu * (2.0 * torch.special.ndtr(z) - 1.0)


def crps_gaussian(mean: torch.Tensor, variance: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Closed-form CRPS of ``N(mean, variance)`` at ``y``, elementwise (no reduction, no checks).

    ``sigma * (z (2 Phi(z) - 1) + 2 phi(z) - 1/sqrt(pi))`` with ``z = (y - mean) / sigma``
    (Gneiting and Raftery, 2007).
    """
    s = variance.sqrt()
    z = (y - mean) / s
    pdf = torch.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return s * (z * (2.0 * torch.special.ndtr(z) - 1.0) + 2.0 * pdf - _INV_SQRT_PI)


def _crps_mixture_exact(g: GaussInputs) -> torch.Tensor:
    """``E|X - y| - E|X - X'| / 2`` in closed form for the Gaussian mixture (Grimit et al., 2006).

    ``O(M^2)`` work, ``O(M)`` memory: one member against all members at a time.
    """
    if g.n_samples == 1:
        return crps_gaussian(g.mean[0], g.variance[0], g.y)
    e_xy = _abs_normal_mean(g.mean - g.y, g.variance).mean(0)
    e_xx = torch.zeros_like(e_xy)
    for m in range(g.n_samples):
        e_xx = e_xx + _abs_normal_mean(g.mean[m] - g.mean, g.variance[m] + g.variance).mean(0)
    return e_xy - 0.5 * e_xx / g.n_samples


def _crps_sample(g: GaussInputs, n_samples: int, generator: torch.Generator | None) -> torch.Tensor:
    """Fair (unbiased) energy-form CRPS estimate from ``n_samples`` draws of the mixture."""
    shape = (n_samples, *g.y.shape)
    member = torch.randint(g.n_samples, shape, generator=generator, device=g.y.device)
    mu = torch.gather(g.mean, 0, member)
    sd = torch.gather(g.variance, 0, member).sqrt()
    eps = torch.randn(shape, generator=generator, dtype=g.y.dtype, device=g.y.device)
    x = (mu + sd * eps).sort(0).values
    e_xy = (x - g.y).abs().mean(0)
    # sum_{i,j} |x_i - x_j| = 2 sum_i (2i - S + 1) x_(i), i = 0..S-1 over the sorted draws
    coef = (2.0 * torch.arange(n_samples, dtype=x.dtype, device=x.device) - n_samples + 1.0)
    pair_sum = 2.0 * (coef.reshape(-1, *([1] * g.y.dim())) * x).sum(0)
    return e_xy - 0.5 * pair_sum / (n_samples * (n_samples - 1))


def crps(
    pred: GaussLike,
    y: ArrayLike,
    mask: ArrayLike | None = None,
    method: Literal["exact", "sample"] = "exact",
    n_samples: int = 1000,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Continuous ranked probability score ``integral (F(x) - 1[x >= y])^2 dx``, ``[...]``.

    Lower is better; it has the units of ``y`` and reduces to the absolute error for a point
    prediction.

    Args:
        pred: predictive or ``(mean, variance)``.
        y: targets.
        mask: optional presence mask.
        method: ``"exact"`` — the closed form for one Gaussian, and for a mixture the exact
            ``E|X - y| - E|X - X'| / 2`` with Gaussian absolute moments (``O(M^2)``);
            ``"sample"`` — the unbiased energy-form estimate from ``n_samples`` draws.
        n_samples: draws for ``method="sample"`` (>= 2).
        generator: random generator for ``method="sample"``.

    Returns:
        ``[...]``, averaged over Dy and points.
    """
    g = gauss_inputs(pred, y, mask)
    if method == "exact":
        per = _crps_mixture_exact(g)
    elif method == "sample":
        check_positive_int("n_samples", n_samples, minimum=2)
        per = _crps_sample(g, n_samples, generator)
    else:
        raise InvalidValueError(f"method: expected 'exact' or 'sample', got {method!r}")
    return _point_mean(per, g)


def sharpness(pred: GaussLike, mask: ArrayLike | None = None) -> torch.Tensor:
    """Mean predictive standard deviation of the mixture (law of total variance), ``[...]``.

    Sharper is better only subject to calibration: read it next to coverage and PIT error.
    """
    g = gauss_inputs(pred, None, mask)
    return _point_mean(g.mixture_variance.sqrt(), g)
