"""Checking and normalizing what the metric functions accept (private).

Every public metric accepts either a :class:`~bayesmeta.predictive.Predictive` or plain tensors and
funnels them through one of the two readers here, so that validation happens once at the entry
point (DESIGN.md section 3) and the metric bodies can assume clean tensors.

Layout convention shared by all metrics: the *last* batch dim is the one that is averaged over
(query points ``Q`` of a task, or ``N`` points of a flat data set); every dim before it is kept.
A predictive's ``[T, Q]`` batch therefore gives ``[T]`` per-task values, flat ``[N, C]``
probabilities give a scalar.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from bayesmeta._validation import ArrayLike, as_tensor, check_finite, check_mask, describe
from bayesmeta.exceptions import InvalidValueError, ShapeError
from bayesmeta.predictive import CategoricalPredictive, GaussianPredictive

__all__ = [
    "PROB_TOLERANCE",
    "ArrayLike",
    "ClassInputs",
    "GaussInputs",
    "as_tensor",
    "check_mask",
    "check_probs",
    "class_inputs",
    "gauss_inputs",
]

PROB_TOLERANCE = 1e-4
"""Largest accepted deviation of a probability vector's sum from one (same as the predictive)."""


def _check_nonempty(name: str, shape: torch.Size) -> None:
    if len(shape) == 0 or shape[-1] == 0:
        raise ShapeError(f"{name}: expected at least one point along the last batch dim, got shape {list(shape)}")


@dataclass(frozen=True)
class ClassInputs:
    """Checked classification inputs.

    Attributes:
        probs: ``[..., N, C]`` predictive (mixture) class probabilities.
        targets: ``[..., N]`` int64 class indices in ``[0, C)``.
        mask: ``[..., N]`` bool, or None when every point is present.
        sample_probs: ``[M, ..., N, C]`` per-member probabilities when known, else None.
        given_log_probs: exact log-probabilities when known (a predictive's log-mean-exp).
    """

    probs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor | None
    sample_probs: torch.Tensor | None
    given_log_probs: torch.Tensor | None = None

    @property
    def log_probs(self) -> torch.Tensor:
        """``[..., N, C]`` log-probabilities (computed on demand: ECE never needs them)."""
        return self.given_log_probs if self.given_log_probs is not None else self.probs.log()


@dataclass(frozen=True)
class GaussInputs:
    """Checked regression inputs: a uniform mixture of M diagonal Gaussians.

    Attributes:
        mean: ``[M, ..., N, Dy]`` member means.
        variance: ``[M, ..., N, Dy]`` member variances (> 0).
        y: ``[..., N, Dy]`` targets.
        mask: ``[..., N]`` bool, or None.
    """

    mean: torch.Tensor
    variance: torch.Tensor
    y: torch.Tensor
    mask: torch.Tensor | None

    @property
    def n_samples(self) -> int:
        """M."""
        return self.mean.shape[0]

    @property
    def mixture_mean(self) -> torch.Tensor:
        """``[..., N, Dy]``."""
        return self.mean.mean(0)

    @property
    def mixture_variance(self) -> torch.Tensor:
        """Law of total variance, ``[..., N, Dy]``."""
        ev = self.variance.mean(0)
        if self.n_samples == 1:
            return ev
        return ev + self.mean.var(0, unbiased=False)


def _check_targets(targets: ArrayLike, batch_shape: torch.Size, n_classes: int) -> torch.Tensor:
    y = as_tensor("targets", targets)
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise InvalidValueError(f"targets: expected integer class indices, got {describe(y)}")
    if y.shape != batch_shape:
        raise ShapeError(
            f"targets: expected shape {list(batch_shape)} (the probabilities' shape without the class dim), "
            f"got {describe(y)}"
        )
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise InvalidValueError(
            f"targets: expected class indices in [0, {n_classes}), got values in [{int(y.min())}, {int(y.max())}]"
        )
    return y.long()


def check_probs(name: str, p: torch.Tensor, min_dim: int = 2) -> torch.Tensor:
    """Validate a probability tensor ``[..., C]``: floating, finite, in [0, 1], rows sum to one.

    Two passes over the data (``aminmax`` and the row sums), so that checking costs little next
    to the metric itself on millions of predictions.
    """
    if p.dim() < min_dim:
        raise ShapeError(f"{name}: expected a tensor with at least {min_dim} dims ([..., C]), got {describe(p)}")
    if not p.is_floating_point():
        raise InvalidValueError(f"{name}: expected floating-point probabilities, got {describe(p)}")
    if p.shape[-1] < 1:
        raise ShapeError(f"{name}: expected at least one class along the last dim, got {describe(p)}")
    if p.numel():
        lo_t, hi_t = torch.aminmax(p.detach())
        lo, hi = float(lo_t), float(hi_t)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            check_finite(name, p)  # raises with NaN/Inf counts
        if lo < 0 or hi > 1 + PROB_TOLERANCE:
            raise InvalidValueError(f"{name}: expected probabilities in [0, 1], got values in [{lo:.3g}, {hi:.3g}]")
        err = float((p.detach().sum(-1) - 1).abs().max())
        if err > PROB_TOLERANCE:
            raise InvalidValueError(
                f"{name}: expected rows summing to 1 (tolerance {PROB_TOLERANCE:g}), got a deviation of {err:.3g}"
            )
    return p


def class_inputs(
    pred: CategoricalPredictive | ArrayLike,
    targets: ArrayLike,
    mask: ArrayLike | None = None,
) -> ClassInputs:
    """Read a :class:`CategoricalPredictive` or probabilities ``[..., N, C]`` with targets ``[..., N]``."""
    lp: torch.Tensor | None = None
    sample: torch.Tensor | None = None
    if isinstance(pred, CategoricalPredictive):
        lp = pred.log_probs
        probs, sample = lp.exp(), pred.sample_probs
    elif isinstance(pred, GaussianPredictive):
        raise InvalidValueError("pred: expected a CategoricalPredictive or class probabilities, got a GaussianPredictive")
    else:
        probs = check_probs("probs", as_tensor("probs", pred))
    y = _check_targets(targets, probs.shape[:-1], probs.shape[-1])
    _check_nonempty("targets", y.shape)
    return ClassInputs(probs, y, check_mask(mask, y.shape), sample, lp)


def gauss_inputs(
    pred: GaussianPredictive | tuple[ArrayLike, ArrayLike],
    y: ArrayLike | None,
    mask: ArrayLike | None = None,
) -> GaussInputs:
    """Read a :class:`GaussianPredictive` or a ``(mean, variance)`` pair with targets.

    The pair describes one Gaussian per point: ``mean`` and ``variance`` of shape ``[..., N, Dy]``
    (a 1-d ``[N]`` is read as ``Dy = 1``), ``y`` of the same shape. A predictive with ``Dy = 1``
    also accepts targets ``[T, Q]``. ``y=None`` is allowed for metrics that need no targets
    (sharpness); the returned ``y`` is then a zero tensor.
    """
    if isinstance(pred, GaussianPredictive):
        mean, var = pred.sample_mean, pred.sample_variance
        yt = None if y is None else as_tensor("y", y)
        if yt is not None and pred.event_dim == 1 and tuple(yt.shape) == tuple(pred.batch_shape):
            yt = yt.unsqueeze(-1)
    elif isinstance(pred, tuple) and len(pred) == 2:
        mean, var = as_tensor("mean", pred[0]), as_tensor("variance", pred[1])
        yt = None if y is None else as_tensor("y", y)
        if mean.dim() == 1:
            mean, var = mean.unsqueeze(-1), var.unsqueeze(-1)
            yt = None if yt is None else yt.unsqueeze(-1)
        if mean.dim() < 2:
            raise ShapeError(f"mean: expected a [..., N, Dy] tensor, got {describe(mean)}")
        if var.shape != mean.shape:
            raise ShapeError(f"variance: expected shape {list(mean.shape)} to match mean, got {describe(var)}")
        for name, t in (("mean", mean), ("variance", var)):
            if not t.is_floating_point():
                raise InvalidValueError(f"{name}: expected a floating-point tensor, got {describe(t)}")
            check_finite(name, t)
        if var.numel() and bool((var <= 0).any()):
            raise InvalidValueError(f"variance: expected strictly positive variances, got min {float(var.min()):.3g}")
        mean, var = mean.unsqueeze(0), var.unsqueeze(0)
    elif isinstance(pred, CategoricalPredictive):
        raise InvalidValueError("pred: expected a GaussianPredictive or a (mean, variance) pair, got a CategoricalPredictive")
    else:
        raise InvalidValueError(
            f"pred: expected a GaussianPredictive or a (mean, variance) pair of tensors, got {type(pred).__name__}"
        )
    if yt is None:
        yt = torch.zeros(mean.shape[1:], dtype=mean.dtype, device=mean.device)
    if tuple(yt.shape) != tuple(mean.shape[1:]):
        raise ShapeError(f"y: expected targets of shape {list(mean.shape[1:])}, got {describe(yt)}")
    if yt.dtype == torch.bool or yt.is_complex():
        raise InvalidValueError(f"y: expected real-valued targets, got {describe(yt)}")
    yt = yt.to(mean.dtype)
    check_finite("y", yt)
    _check_nonempty("y", yt.shape[:-1])
    return GaussInputs(mean, var, yt, check_mask(mask, yt.shape[:-1]))
