"""Referral as a decision rule: a threshold on an uncertainty score, fitted on validation episodes.

A risk-coverage curve (:mod:`bayesmeta.metrics.selective`) says what *could* be achieved on data
whose labels are known. A deployed model needs a rule fixed in advance: "refer the case to a
human when its uncertainty exceeds ``tau``". :func:`fit_referral_rule` chooses ``tau`` on
validation episodes (all their query points pooled) for one of three objectives:

- ``"accuracy"``: the fewest referrals such that the retained cases reach ``target_accuracy``;
- ``"referral_rate"``: refer the most uncertain cases, at most ``max_referral`` of them;
- ``"cost"``: the lowest expected cost per case, with separate costs for a missed positive
  (a retained positive case called negative), a false alarm (a retained negative called
  positive) and a referral (every referred case, whatever its label).

:meth:`ReferralRule.evaluate` applies the fixed ``tau`` to new (test) episodes and reports, per
task and as means with bootstrap CIs over tasks, the achieved accuracy of the retained cases, the
referral rate, the sensitivity of the retained cases and the expected cost. A rule fitted and
scored on the same episodes is optimistic; always score it on other episodes.

Cases with tied scores are referred or retained together (the rule is a threshold, so it cannot
split them). The default score is the predictive entropy, which is meaningful for every learner;
mutual information is identically 0 for point-estimate learners (M = 1), and a constant score
gets a warning because a threshold on it can only refer everything or nothing.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch

from bayesmeta.exceptions import InvalidValueError
from bayesmeta.metrics._inputs import ArrayLike, class_inputs
from bayesmeta.metrics.aggregation import MeanCI
from bayesmeta.metrics.clinical import (
    Positive,
    aggregate_clinical,
    check_positive_classes,
    check_threshold,
)
from bayesmeta.metrics.selective import selective_inputs
from bayesmeta.metrics.uncertainty import default_score, warn_if_constant
from bayesmeta.predictive import CategoricalPredictive

__all__ = [
    "OBJECTIVES",
    "REFERRAL_METRICS",
    "ReferralRule",
    "ReferralOutcome",
    "fit_referral_rule",
    "default_score",
    "warn_if_constant",
]

Objective = Literal["accuracy", "referral_rate", "cost"]
OBJECTIVES: tuple[str, ...] = ("accuracy", "referral_rate", "cost")
REFERRAL_METRICS: tuple[str, ...] = (
    "retained_accuracy", "referral_rate", "retained_sensitivity", "retained_specificity",
    "expected_cost", "missed_positive_rate",
)  # fmt: skip
_COST_KEYS = ("missed_positive", "false_alarm", "referral")

PredLike = CategoricalPredictive | ArrayLike


@dataclass(frozen=True)
class _Points:
    """Per-point inputs of a rule, ``[T, Q]`` each (mask False = absent)."""

    score: torch.Tensor
    correct: torch.Tensor
    truth: torch.Tensor
    call: torch.Tensor
    mask: torch.Tensor


def _points(
    pred: PredLike, targets: ArrayLike, mask: ArrayLike | None, score: str | ArrayLike,
    positive: Positive, threshold: float,
) -> _Points:  # fmt: skip
    x = class_inputs(pred, targets, mask)
    unc, loss, m = selective_inputs(pred, targets, score, mask)
    ids = torch.tensor(check_positive_classes(positive, x.probs.shape[-1]), device=x.probs.device)
    p_pos = x.probs.index_select(-1, ids).sum(-1)
    present = torch.ones_like(loss, dtype=torch.bool) if m is None else m
    return _Points(
        score=unc.double(),
        correct=loss.eq(0),
        truth=torch.isin(x.targets, ids),
        call=p_pos >= threshold,
        mask=present,
    )


def _check_costs(costs: Mapping[str, float] | None) -> dict[str, float]:
    if costs is None:
        raise InvalidValueError(f"costs: the 'cost' objective needs costs with keys {list(_COST_KEYS)}")
    unknown = [k for k in costs if k not in _COST_KEYS]
    if unknown or any(k not in costs for k in _COST_KEYS):
        raise InvalidValueError(f"costs: expected exactly the keys {list(_COST_KEYS)}, got {sorted(costs)}")
    out = {}
    for k in _COST_KEYS:
        v = costs[k]
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise InvalidValueError(f"costs[{k!r}]: expected a finite non-negative number, got {v!r}")
        out[k] = float(v)
    return out


@dataclass(frozen=True)
class ReferralOutcome:
    """What a referral rule achieves on a set of episodes.

    Attributes:
        per_task: metric -> ``[T]`` (NaN where undefined: accuracy with every case referred,
            sensitivity with no retained positive); keys :data:`REFERRAL_METRICS`.
        summary: metric -> mean and 95% bootstrap CI over the tasks where it is defined.
        pooled: metric -> value over all points of all tasks pooled.
    """

    per_task: dict[str, torch.Tensor]
    summary: dict[str, MeanCI]
    pooled: dict[str, float]


@dataclass(frozen=True)
class ReferralRule:
    """Refer a case when its uncertainty score exceeds ``tau`` (fitted by :func:`fit_referral_rule`).

    Attributes:
        score: the uncertainty score's name (see :data:`bayesmeta.metrics.SCORES`).
        tau: the threshold; ``-inf`` refers every case, ``+inf`` none.
        objective: how ``tau`` was chosen, and ``params`` its parameters.
        positive: the positive class(es); ``threshold`` the probability at which a retained case
            is called positive (for sensitivity and costs).
        validation: what the rule achieved on the validation points it was fitted on (pooled).
    """

    score: str
    tau: float
    objective: str
    params: dict[str, object] = field(default_factory=dict)
    positive: Positive = 1
    threshold: float = 0.5
    validation: dict[str, float] = field(default_factory=dict)

    def refer(self, pred: PredLike, targets: ArrayLike, mask: ArrayLike | None = None) -> torch.Tensor:
        """Bool ``[T, Q]``: True where the case is referred (absent points are False)."""
        pts = _points(pred, targets, mask, self.score, self.positive, self.threshold)
        return (pts.score > self.tau) & pts.mask

    def evaluate(
        self, pred: PredLike, targets: ArrayLike, mask: ArrayLike | None = None, seed: int = 0
    ) -> ReferralOutcome:
        """Apply the fixed rule to (test) episodes ``[T, Q]``; per-task results and CIs over tasks."""
        pts = _points(pred, targets, mask, self.score, self.positive, self.threshold)
        costs = self.params.get("costs")
        per_task = _outcome(pts, self.tau, costs if isinstance(costs, dict) else None, dim=-1)
        pooled_pts = _Points(*(t.reshape(1, -1) for t in (pts.score, pts.correct, pts.truth, pts.call, pts.mask)))
        pooled = {k: float(v[0]) for k, v in _outcome(pooled_pts, self.tau, costs if isinstance(costs, dict) else None, dim=-1).items()}
        return ReferralOutcome(per_task, aggregate_clinical(per_task, seed=seed), pooled)


def _outcome(pts: _Points, tau: float, costs: dict[str, float] | None, dim: int) -> dict[str, torch.Tensor]:
    """Per-row results of keeping ``score <= tau``."""
    keep = (pts.score <= tau) & pts.mask
    ref = (pts.score > tau) & pts.mask
    n = pts.mask.sum(dim).double()
    kept = keep.sum(dim).double()

    def count(sel: torch.Tensor) -> torch.Tensor:
        return sel.sum(dim).double()

    def ratio(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.where(b > 0, a / b.clamp_min(1), torch.full_like(a, math.nan))

    fn = count(keep & pts.truth & ~pts.call)
    fp = count(keep & ~pts.truth & pts.call)
    out = {
        "retained_accuracy": ratio(count(keep & pts.correct), kept),
        "referral_rate": count(ref) / n,
        "retained_sensitivity": ratio(count(keep & pts.truth & pts.call), count(keep & pts.truth)),
        "retained_specificity": ratio(count(keep & ~pts.truth & ~pts.call), count(keep & ~pts.truth)),
        "missed_positive_rate": fn / n,
    }
    if costs is not None:
        out["expected_cost"] = (costs["missed_positive"] * fn + costs["false_alarm"] * fp + costs["referral"] * count(ref)) / n
    else:
        out["expected_cost"] = torch.full_like(n, math.nan)
    return out


def fit_referral_rule(
    pred: PredLike,
    targets: ArrayLike,
    mask: ArrayLike | None = None,
    *,
    objective: Objective = "accuracy",
    target_accuracy: float | None = None,
    max_referral: float | None = None,
    costs: Mapping[str, float] | None = None,
    score: str | None = None,
    positive: Positive = 1,
    threshold: float = 0.5,
) -> ReferralRule:
    """Fit a referral threshold on validation episodes (all query points pooled).

    Args:
        pred: validation predictive ``[T, Q, C]`` (or probabilities).
        targets: ``[T, Q]`` class indices; mask: optional bool ``[T, Q]``.
        objective: ``"accuracy"`` (needs ``target_accuracy``), ``"referral_rate"`` (needs
            ``max_referral``) or ``"cost"`` (needs ``costs`` with keys ``missed_positive``,
            ``false_alarm``, ``referral``: cost per case of each outcome; a correct retained
            call costs 0).
        score: uncertainty score name; default :func:`default_score` (entropy).
        positive: positive class(es) (sensitivity and costs).
        threshold: the probability at which a retained case is called positive.

    Returns:
        The fitted :class:`ReferralRule`. With ``"accuracy"``, if no threshold reaches the
        target the rule refers every case and a warning says so.
    """
    if objective not in OBJECTIVES:
        raise InvalidValueError(f"objective: expected one of {list(OBJECTIVES)}, got {objective!r}")
    score = default_score(pred) if score is None else score
    if not isinstance(score, str):
        raise InvalidValueError(f"score: expected a score name, got {type(score).__name__} (a rule must be re-applicable)")
    threshold = check_threshold(threshold)
    pts = _points(pred, targets, mask, score, positive, threshold)
    m = pts.mask.reshape(-1)
    s = pts.score.reshape(-1)[m]
    warn_if_constant(s, score, "validation points")
    flat = _Points(*(t.reshape(-1)[m].unsqueeze(0) for t in (pts.score, pts.correct, pts.truth, pts.call, pts.mask)))
    # candidate thresholds: refer everything (-inf), or keep every score <= each distinct value;
    # counts come from cumulative sums over the sorted scores, taken at the end of each tie run
    order = torch.argsort(s, stable=True)
    s_sorted = s[order]
    ends = torch.cat([(s_sorted[1:] != s_sorted[:-1]).nonzero().flatten(), torch.tensor([s.numel() - 1])])
    zero = torch.zeros(1, dtype=torch.float64)

    def kept_count(sel: torch.Tensor) -> torch.Tensor:
        """``[K]`` number of selected points retained at each candidate (K = distinct scores + 1)."""
        return torch.cat([zero, sel.reshape(-1)[order].double().cumsum(0)[ends]])

    cands = torch.cat([torch.tensor([-math.inf], dtype=s.dtype), s_sorted[ends]])
    n = s.numel()
    kept = torch.cat([zero, (ends + 1).double()])
    referral = 1.0 - kept / n
    params: dict[str, object] = {}
    if objective == "accuracy":
        a = _fraction("target_accuracy", target_accuracy)
        params["target_accuracy"] = a
        acc = torch.where(kept > 0, kept_count(flat.correct) / kept.clamp_min(1), torch.full_like(kept, -1.0))
        ok = (acc >= a - 1e-12).nonzero().flatten()
        if ok.numel() == 0:
            warnings.warn(
                f"target_accuracy: no threshold reaches {a:.3g} on the validation episodes; the rule refers every case",
                UserWarning,
                stacklevel=2,
            )
            best = 0
        else:
            best = int(ok.max())  # the largest tau: fewest referrals
    elif objective == "referral_rate":
        r = _fraction("max_referral", max_referral)
        params["max_referral"] = r
        ok = (referral <= r + 1e-12).nonzero().flatten()
        best = int(ok.min())  # ok is never empty: the last candidate refers nothing
    else:
        c = _check_costs(costs)
        params["costs"] = c
        fn = kept_count(flat.truth & ~flat.call)
        fp = kept_count(~flat.truth & flat.call)
        cost = (c["missed_positive"] * fn + c["false_alarm"] * fp + c["referral"] * (n - kept)) / n
        low = cost.min()
        best = int((cost <= low + 1e-12).nonzero().flatten().max())  # ties: fewest referrals
    tau = float(cands[best])
    validation = {k: float(v[0]) for k, v in _outcome(flat, tau, params.get("costs"), dim=-1).items()}  # type: ignore[arg-type]
    return ReferralRule(score, tau, objective, params, positive, threshold, validation)


def _fraction(name: str, v: float | None) -> float:
    if v is None or isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 <= v <= 1.0:
        raise InvalidValueError(f"{name}: expected a fraction in [0, 1], got {v!r}")
    return float(v)
