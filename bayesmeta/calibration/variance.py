"""Post-hoc variance scaling for regression (Levi et al., 2019; Kuleshov et al., 2018): the
regression counterpart of temperature scaling.

One scalar ``s > 0`` widens (``s > 1``) or narrows (``s < 1``) the whole predictive distribution
about its mean: ``Y' = mu + s * (Y - mu)`` where ``mu`` is the mixture mean. For a
:class:`~bayesmeta.predictive.GaussianPredictive` with members ``N(mu_m, v_m)`` this is again a
mixture, with members ``N(mu + s * (mu_m - mu), s^2 * v_m)``: the shape of the predictive (and so
the ranking of query points by uncertainty) is kept, only its scale changes, and for M = 1 it is
the familiar ``sigma -> s * sigma``. ``s`` is fitted by minimizing the validation NLL in float64,
by the same grid + golden-section search as temperature scaling (``log s`` in ``[-4, 4]``,
extended to ``[-8, 8]`` when the optimum is at an end of the grid).
"""

from __future__ import annotations

import math

import torch

from bayesmeta._validation import ArrayLike, check_mask
from bayesmeta.calibration._search import minimize_1d
from bayesmeta.calibration.scores import check_real_targets
from bayesmeta.exceptions import InvalidValueError, NumericalError, ShapeError
from bayesmeta.predictive import GaussianPredictive

__all__ = ["VarianceScaling"]

_LOG_S_RANGE = 4.0


def _scaled(mean: torch.Tensor, variance: torch.Tensor, s: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Members ``[M, T, Q, Dy]`` of the predictive scaled by ``s`` about the mixture mean."""
    mu = mean.mean(0, keepdim=True)
    return mu + s * (mean - mu), variance * s**2


class VarianceScaling:
    """A fitted (or given) scale factor for Gaussian predictives.

    Args:
        scale: ``s > 0``; 1 leaves predictions unchanged, above 1 widens them (for an
            overconfident model).

    Example:
        >>> vs = VarianceScaling().fit(val_predictive, val_targets)
        >>> calibrated = vs(test_predictive)
    """

    def __init__(self, scale: float = 1.0):
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not (math.isfinite(scale) and scale > 0):
            raise InvalidValueError(f"scale: expected a finite number > 0, got {scale!r}")
        self.scale = float(scale)

    def fit(self, pred: GaussianPredictive, targets: ArrayLike, mask: ArrayLike | None = None) -> VarianceScaling:
        """Fit ``s`` by minimizing the NLL of validation targets; returns a new, fitted object.

        Args:
            pred: validation predictive, members ``[M, T, Q, Dy]``.
            targets: ``[T, Q, Dy]`` (or ``[T, Q]`` when ``Dy = 1``).
            mask: optional bool ``[T, Q]``; only present points count.

        Raises:
            InvalidValueError: ``pred`` is not a GaussianPredictive, or targets are not finite.
            ShapeError: targets or mask of the wrong shape.
        """
        if not isinstance(pred, GaussianPredictive):
            raise InvalidValueError(f"pred: expected a GaussianPredictive, got {type(pred).__name__}")
        y = check_real_targets(pred, targets)
        if y.numel() == 0:
            raise ShapeError("targets: expected at least one validation point, got none")
        m = check_mask(mask, pred.batch_shape)
        mean, var, y = pred.sample_mean.detach().double(), pred.sample_variance.detach().double(), y.double()

        def f(log_s: float) -> float:
            mu, v = _scaled(mean, var, math.exp(log_s))
            lp = torch.logsumexp((-0.5 * (math.log(2 * math.pi) + v.log() + (y - mu) ** 2 / v)).sum(-1), 0)
            return float(-(lp[m] if m is not None else lp).mean())

        with torch.no_grad():
            log_s = minimize_1d(f, -_LOG_S_RANGE, _LOG_S_RANGE, n_grid=33)
        if not math.isfinite(log_s):
            raise NumericalError("variance scaling: the fitted log-scale is not finite")
        return VarianceScaling(math.exp(log_s))

    def __call__(self, pred: GaussianPredictive) -> GaussianPredictive:
        """The predictive scaled by ``s`` about its mixture mean (see the module docstring)."""
        if not isinstance(pred, GaussianPredictive):
            raise InvalidValueError(f"pred: expected a GaussianPredictive, got {type(pred).__name__}")
        mean, var = _scaled(pred.sample_mean, pred.sample_variance, self.scale)
        return GaussianPredictive(mean, var)

    def to_dict(self) -> dict[str, float | str]:
        """Plain-JSON description (saved next to calibrated metrics)."""
        return {"name": "variance_scaling", "scale": self.scale}

    def __repr__(self) -> str:
        return f"VarianceScaling(scale={self.scale:.4g})"
