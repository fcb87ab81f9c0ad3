"""Shifted-task detection: does an uncertainty score separate shifted tasks from in-distribution ones?

A good Bayesian meta-learner is more uncertain (in particular more *epistemically* uncertain) on
tasks unlike its meta-training tasks. The detection quality is the AUROC of a per-task score
between in-distribution (negative) and shifted (positive) tasks: 0.5 is chance, 1 perfect.
"""

from __future__ import annotations

import torch

from bayesmeta._validation import check_finite
from bayesmeta.exceptions import InvalidValueError
from bayesmeta.masked import masked_mean
from bayesmeta.metrics._inputs import ArrayLike, as_tensor, check_mask
from bayesmeta.metrics._ranking import tie_groups
from bayesmeta.metrics.uncertainty import (
    default_score,
    expected_entropy,
    mutual_information,
    predictive_entropy,
    warn_if_constant,
)
from bayesmeta.predictive import CategoricalPredictive, GaussianPredictive

__all__ = ["auroc", "task_uncertainty", "shift_detection_auroc"]

_SCORES = {
    "entropy": predictive_entropy,
    "mutual_information": mutual_information,
    "expected_entropy": expected_entropy,
}


def auroc(negative: ArrayLike, positive: ArrayLike) -> torch.Tensor:
    """Probability that a random positive scores above a random negative (ties count one half).

    The Mann–Whitney form with average ranks, ``O(n log n)``.

    Args:
        negative: scores of the negative class (e.g. in-distribution tasks), any shape.
        positive: scores of the positive class (e.g. shifted tasks), any shape.

    Returns:
        A scalar float64 tensor in ``[0, 1]``.
    """
    neg = as_tensor("negative", negative).detach().reshape(-1).double()
    pos = as_tensor("positive", positive).detach().reshape(-1).double()
    for name, t in (("negative", neg), ("positive", pos)):
        if t.numel() == 0:
            raise InvalidValueError(f"{name}: expected at least one score, got none")
        check_finite(name, t)
    both = torch.cat([neg, pos])
    vals, order = both.sort(stable=True)
    start, end = tie_groups(vals)
    avg_rank = torch.empty_like(vals).scatter_(0, order, (start + end).double() / 2.0 + 1.0)
    n0, n1 = neg.numel(), pos.numel()
    r_pos = avg_rank[n0:].sum()
    return (r_pos - n1 * (n1 + 1) / 2.0) / (n0 * n1)


def task_uncertainty(
    pred: CategoricalPredictive | GaussianPredictive,
    score: str | None = "mutual_information",
    mask: ArrayLike | None = None,
) -> torch.Tensor:
    """Mean per-point uncertainty of each task, ``[T]``.

    Args:
        pred: a predictive with batch ``[T, Q]``.
        score: ``"mutual_information"`` (epistemic), ``"entropy"`` (total) or
            ``"expected_entropy"`` (aleatoric); None picks
            :func:`~bayesmeta.metrics.default_score` for shift (mutual information when the
            predictive has M > 1 samples, entropy for point estimates).
        mask: optional bool ``[T, Q]``.
    """
    if not isinstance(pred, CategoricalPredictive | GaussianPredictive):
        raise InvalidValueError(f"pred: expected a CategoricalPredictive or GaussianPredictive, got {type(pred).__name__}")
    if score is None:
        score = default_score(pred, "shift")
    if score not in _SCORES:
        raise InvalidValueError(f"score: expected one of {sorted(_SCORES)}, got {score!r}")
    per_point = _SCORES[score](pred)
    return masked_mean(per_point, check_mask(mask, per_point.shape), dim=-1)


def shift_detection_auroc(
    pred_in: CategoricalPredictive | GaussianPredictive,
    pred_shifted: CategoricalPredictive | GaussianPredictive,
    score: str | None = None,
    mask_in: ArrayLike | None = None,
    mask_shifted: ArrayLike | None = None,
) -> torch.Tensor:
    """AUROC of the per-task mean ``score`` for telling shifted tasks from in-distribution ones.

    Args:
        score: as in :func:`task_uncertainty`; None (default) picks mutual information for
            sampling learners (M > 1) and predictive entropy for point estimates, whose mutual
            information is identically 0. A score that is constant over all tasks gets a
            ``UserWarning`` (its AUROC is 0.5 by construction, not a finding).

    Returns:
        A scalar tensor; 0.5 is chance, 1 means every shifted task is more uncertain than every
        in-distribution task.
    """
    if score is None:
        score = default_score(pred_in, "shift") if pred_in.n_samples == pred_shifted.n_samples else "entropy"
    u_in, u_shift = task_uncertainty(pred_in, score, mask_in), task_uncertainty(pred_shifted, score, mask_shifted)
    warn_if_constant(torch.cat([u_in.reshape(-1), u_shift.reshape(-1)]), score, "tasks")
    return auroc(u_in, u_shift)
