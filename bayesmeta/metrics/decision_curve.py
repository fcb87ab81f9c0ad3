"""Decision-curve analysis (Vickers & Elkin, 2006): net benefit against the threshold probability.

A clinician who would treat (or investigate) a patient when the risk exceeds ``p_t`` values a
true positive ``(1 - p_t) / p_t`` times as much as the harm of a false positive. The net benefit
of calling "positive" when the positive score is ``>= p_t`` is

    NB(p_t) = TP / n - FP / n * p_t / (1 - p_t),

compared with treating everyone, ``pi - (1 - pi) * p_t / (1 - p_t)`` (pi the prevalence), and
treating no one, 0. A model is useful at ``p_t`` where its curve lies above both references.
Net benefit is computed per task (each episode is a clinic with its own prevalence) and averaged
over tasks; ``per_task`` keeps the values for intervals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from bayesmeta.exceptions import InvalidValueError
from bayesmeta.metrics._inputs import ArrayLike, class_inputs
from bayesmeta.metrics.clinical import Positive, PredLike, positive_score

__all__ = ["DecisionCurve", "decision_curve", "DEFAULT_THRESHOLDS"]

#: Threshold probabilities 0.01 .. 0.99.
DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(0.01 * k, 2) for k in range(1, 100))


@dataclass(frozen=True)
class DecisionCurve:
    """Net benefit of a model and the two reference strategies.

    Attributes:
        thresholds: ``[K]`` threshold probabilities.
        net_benefit: ``[K]`` mean over tasks of the model's net benefit.
        treat_all: ``[K]`` mean over tasks of treating every case.
        treat_none: ``[K]`` zeros.
        per_task: ``[T, K]`` the model's net benefit per task.
    """

    thresholds: torch.Tensor
    net_benefit: torch.Tensor
    treat_all: torch.Tensor
    treat_none: torch.Tensor
    per_task: torch.Tensor


def decision_curve(
    pred: PredLike,
    targets: ArrayLike,
    thresholds: Sequence[float] | torch.Tensor = DEFAULT_THRESHOLDS,
    positive: Positive = 1,
    mask: ArrayLike | None = None,
) -> DecisionCurve:
    """Net benefit per threshold probability (see the module docstring).

    Args:
        pred: predictive ``[T, Q, C]`` or probabilities ``[..., N, C]`` (flat ``[N, C]`` is one task).
        targets: ``[T, Q]`` class indices; mask: optional bool ``[T, Q]``.
        thresholds: threshold probabilities in (0, 1).
        positive: the positive class(es).
    """
    pt = torch.as_tensor(thresholds, dtype=torch.float64).reshape(-1)
    if pt.numel() == 0 or not bool(((pt > 0) & (pt < 1)).all()):
        raise InvalidValueError(f"thresholds: expected threshold probabilities in (0, 1), got {pt.tolist()[:5]}...")
    x = class_inputs(pred, targets, mask)
    score, truth = positive_score(x, positive)
    score, truth = score.double(), truth
    present = torch.ones_like(truth) if x.mask is None else x.mask
    if score.dim() == 1:
        score, truth, present = score.unsqueeze(0), truth.unsqueeze(0), present.unsqueeze(0)
    score, truth, present = (t.reshape(-1, t.shape[-1]) for t in (score, truth, present))
    n = present.sum(-1, keepdim=True).double()  # [T, 1]
    call = score.unsqueeze(-1) >= pt  # [T, N, K]
    tp = (call & (truth & present).unsqueeze(-1)).sum(1).double()
    fp = (call & (~truth & present).unsqueeze(-1)).sum(1).double()
    odds = pt / (1 - pt)
    nb = tp / n - fp / n * odds
    pi = (truth & present).sum(-1, keepdim=True).double() / n
    treat_all = pi - (1 - pi) * odds
    return DecisionCurve(pt, nb.mean(0), treat_all.mean(0), torch.zeros_like(pt), nb)
