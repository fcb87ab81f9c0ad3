"""Post-hoc temperature scaling (Guo et al., 2017): the calibration baseline to beat.

(Moved here from ``bayesmeta.metrics.temperature``; ``bayesmeta.metrics`` re-exports it, since
metrics stay pure functions of a predictive and calibrators transform one.)

One scalar temperature ``tau > 0`` divides every logit; it is fitted by minimizing the NLL on
validation tasks and then applied to test predictives. It changes confidence but never the
top-1 prediction of a single member. For a :class:`~bayesmeta.predictive.CategoricalPredictive`
with M members, each member's log-probabilities (logits up to a constant) are divided by ``tau``
and the NLL of the resulting mixture is minimized.

Fitting, in float64: the NLL is evaluated on a grid of ``log tau`` in ``[-4, 4]`` (33 points,
which guards against a poor local optimum for mixtures), then the best grid point's bracket is
refined by golden-section search to ``|d log tau| < 1e-9``. For one member the NLL is convex in
``1 / tau``, so this finds the global minimum. A one-dimensional search needs no gradients and no
``torch.optim`` (see :mod:`bayesmeta.calibration._search`). When the best
grid point is an end of the grid (e.g. labels independent of the predictions, where the optimum is
an infinite temperature), the search continues to ``[-8, 8]`` and stops at the bound.
"""

from __future__ import annotations

import math

import torch

from bayesmeta._validation import ArrayLike, as_tensor, check_finite, check_mask, describe
from bayesmeta.calibration._search import minimize_1d
from bayesmeta.exceptions import InvalidValueError, NumericalError, ShapeError
from bayesmeta.predictive import CategoricalPredictive

__all__ = ["TemperatureScaling", "fit_temperature"]

_LOG_TAU_RANGE = 4.0
_FLOOR = -1e4  # log-probabilities of exactly-zero classes are floored here while fitting


def _member_logits(pred: CategoricalPredictive | ArrayLike) -> torch.Tensor:
    """``[M, ..., N, C]`` logits (a plain ``[..., N, C]`` logits tensor becomes M = 1)."""
    if isinstance(pred, CategoricalPredictive):
        return pred.sample_log_probs.detach().clamp_min(_FLOOR)
    z = as_tensor("logits", pred)
    if z.dim() < 2 or not z.is_floating_point():
        raise ShapeError(f"logits: expected a floating [..., N, C] tensor, got {describe(z)}")
    check_finite("logits", z)
    return z.detach().unsqueeze(0)


def _mixture_nll(
    logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None, log_tau: torch.Tensor
) -> torch.Tensor:
    lp = torch.log_softmax(logits * torch.exp(-log_tau), dim=-1)
    mix = torch.logsumexp(lp, dim=0) - math.log(lp.shape[0])
    nll = -mix.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    if mask is None:
        return nll.mean()
    return nll[mask].mean()


class TemperatureScaling:
    """A fitted (or given) temperature, applicable to predictives and logits.

    Args:
        temperature: ``tau > 0``; 1 leaves predictions unchanged, above 1 softens them.

    Example:
        >>> ts = TemperatureScaling.fit(val_predictive, val_targets)
        >>> calibrated = ts(test_predictive)
    """

    def __init__(self, temperature: float = 1.0):
        if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not (
            math.isfinite(temperature) and temperature > 0
        ):
            raise InvalidValueError(f"temperature: expected a finite number > 0, got {temperature!r}")
        self.temperature = float(temperature)

    @classmethod
    def fit(
        cls,
        pred: CategoricalPredictive | ArrayLike,
        targets: ArrayLike,
        mask: ArrayLike | None = None,
    ) -> TemperatureScaling:
        """Fit ``tau`` by minimizing the validation NLL.

        Args:
            pred: validation predictive (``[M, T, Q, C]`` members) or logits ``[..., N, C]``.
            targets: class indices ``[T, Q]`` / ``[..., N]``.
            mask: optional bool ``[T, Q]`` / ``[..., N]``.
        """
        z = _member_logits(pred).double()
        y = as_tensor("targets", targets)
        if y.is_floating_point() or y.dtype == torch.bool:
            raise InvalidValueError(f"targets: expected integer class indices, got {describe(y)}")
        if tuple(y.shape) != tuple(z.shape[1:-1]):
            raise ShapeError(f"targets: expected shape {list(z.shape[1:-1])}, got {describe(y)}")
        n_classes = z.shape[-1]
        if y.numel() == 0:
            raise ShapeError("targets: expected at least one validation point, got none")
        if int(y.min()) < 0 or int(y.max()) >= n_classes:
            raise InvalidValueError(f"targets: expected class indices in [0, {n_classes}), got [{int(y.min())}, {int(y.max())}]")
        y = y.long()
        m = check_mask(mask, y.shape)

        with torch.no_grad():
            def f(log_tau: float) -> float:
                return float(_mixture_nll(z, y, m, torch.tensor(log_tau, dtype=torch.float64)))

            log_tau = minimize_1d(f, -_LOG_TAU_RANGE, _LOG_TAU_RANGE, n_grid=33)
        if not math.isfinite(log_tau):
            raise NumericalError("temperature scaling: the fitted log-temperature is not finite")
        return cls(math.exp(log_tau))

    def scale_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits / tau`` (any shape)."""
        return logits / self.temperature

    def __call__(self, pred: CategoricalPredictive) -> CategoricalPredictive:
        """The predictive with every member's log-probabilities divided by ``tau`` and renormalized."""
        if not isinstance(pred, CategoricalPredictive):
            raise InvalidValueError(f"pred: expected a CategoricalPredictive, got {type(pred).__name__}")
        return CategoricalPredictive(logits=pred.sample_log_probs.clamp_min(_FLOOR) / self.temperature)

    def to_dict(self) -> dict[str, float | str]:
        """Plain-JSON description (saved next to calibrated metrics)."""
        return {"name": "temperature_scaling", "temperature": self.temperature}

    def __repr__(self) -> str:
        return f"TemperatureScaling(temperature={self.temperature:.4g})"


def fit_temperature(
    pred: CategoricalPredictive | ArrayLike,
    targets: ArrayLike,
    mask: ArrayLike | None = None,
) -> TemperatureScaling:
    """Shorthand for :meth:`TemperatureScaling.fit`."""
    return TemperatureScaling.fit(pred, targets, mask)
