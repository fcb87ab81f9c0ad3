"""Negative log-likelihood for either kind of predictive (dispatches on the input's type)."""

from __future__ import annotations

import torch

from bayesmeta.metrics._inputs import ArrayLike
from bayesmeta.metrics.classification import categorical_nll
from bayesmeta.metrics.regression import gaussian_nll
from bayesmeta.predictive import CategoricalPredictive, GaussianPredictive

__all__ = ["nll"]


def nll(
    pred: CategoricalPredictive | GaussianPredictive | ArrayLike | tuple[ArrayLike, ArrayLike],
    targets: ArrayLike,
    mask: ArrayLike | None = None,
) -> torch.Tensor:
    """Mean negative log predictive probability (density) of the targets, ``[...]``.

    Args:
        pred: a :class:`CategoricalPredictive` or probabilities ``[..., N, C]`` (then ``targets``
            are class indices ``[..., N]``, see :func:`~bayesmeta.metrics.categorical_nll`), or a
            :class:`GaussianPredictive` or ``(mean, variance)`` pair (then ``targets`` are
            ``[..., N, Dy]``, see :func:`~bayesmeta.metrics.gaussian_nll`).
        targets: the observed values.
        mask: optional bool ``[..., N]``.

    Returns:
        ``[T]`` for a predictive, a scalar for flat inputs.
    """
    if isinstance(pred, GaussianPredictive | tuple):
        return gaussian_nll(pred, targets, mask)
    return categorical_nll(pred, targets, mask)
