"""Clinical classification metrics, per task: balanced accuracy, AUROC, sensitivity, specificity,
sensitivity at a fixed specificity, PPV / NPV and the missed-positive rate.

Conventions (same inputs as :mod:`bayesmeta.metrics.classification`):

- ``pred``: a :class:`~bayesmeta.predictive.CategoricalPredictive` (mixture probabilities
  ``[T, Q, C]``) or probabilities ``[..., N, C]``; ``targets`` ``[..., N]``; optional bool
  ``mask`` ``[..., N]``. The last batch dim is reduced, the others kept: per-task values ``[T]``.
- ``positive``: the positive class, or a list of classes that together are "positive" (e.g.
  ``[2, 3, 4]`` for referable retinopathy). The positive score of a case is the summed
  probability of the positive classes; the case is called positive when that score is
  ``>= threshold``. Labels must have fixed class identity across tasks (see
  :class:`~bayesmeta.tasks.ClinicalSampler`), otherwise "class 1" means a different class in
  every task and these numbers mean nothing.
- A value that is undefined in a task (sensitivity without positive cases, PPV without positive
  calls, AUROC without both classes) is NaN for that task, never a made-up 0 or 1;
  :func:`aggregate_clinical` averages over the tasks where it is defined and reports how many.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from bayesmeta.exceptions import InvalidValueError
from bayesmeta.metrics._inputs import ArrayLike, ClassInputs, class_inputs
from bayesmeta.metrics.aggregation import MeanCI, mean_ci
from bayesmeta.metrics.shift import auroc as _auroc
from bayesmeta.predictive import CategoricalPredictive

__all__ = [
    "CLINICAL_METRIC_INFO",
    "ConfusionCounts",
    "confusion_counts",
    "positive_score",
    "balanced_accuracy",
    "roc_auc",
    "sensitivity",
    "specificity",
    "sensitivity_at_specificity",
    "ppv",
    "npv",
    "missed_positive_rate",
    "clinical_metrics",
    "aggregate_clinical",
    "check_positive_classes",
    "check_threshold",
]

PredLike = CategoricalPredictive | ArrayLike
Positive = int | Sequence[int]

#: Metric name -> (description, which direction is better), in table order.
CLINICAL_METRIC_INFO: dict[str, tuple[str, str]] = {
    "balanced_accuracy": ("mean recall over the classes present", "higher"),
    "auroc": ("AUROC of the positive score (one-vs-rest macro average when multi-class without positive)", "higher"),
    "sensitivity": ("true-positive rate at the threshold", "higher"),
    "specificity": ("true-negative rate at the threshold", "higher"),
    "sensitivity_at_specificity": ("best sensitivity with specificity >= the target", "higher"),
    "ppv": ("positive predictive value at the episode's prevalence", "higher"),
    "npv": ("negative predictive value at the episode's prevalence", "higher"),
    "missed_positive_rate": ("missed positives per case (false negatives / cases)", "lower"),
    "prevalence": ("fraction of positive cases in the episode's queries", "none"),
}


def check_positive_classes(positive: Positive, n_classes: int) -> list[int]:
    """The positive class indices ``positive`` names, checked against ``n_classes``; InvalidValueError if bad."""
    ids = [positive] if isinstance(positive, int) and not isinstance(positive, bool) else list(positive)  # type: ignore[arg-type]
    if not ids or any(isinstance(c, bool) or not isinstance(c, int) for c in ids):
        raise InvalidValueError(f"positive: expected a class index or a list of class indices, got {positive!r}")
    if len(set(ids)) != len(ids) or min(ids) < 0 or max(ids) >= n_classes:
        raise InvalidValueError(f"positive: expected distinct class indices in [0, {n_classes}), got {positive!r}")
    if len(ids) == n_classes:
        raise InvalidValueError(f"positive: every one of the {n_classes} classes is positive, so nothing is negative")
    return ids


def check_threshold(threshold: float) -> float:
    """``threshold`` as a float if it is a probability in ``[0, 1]``, else InvalidValueError."""
    ok = isinstance(threshold, int | float) and not isinstance(threshold, bool) and 0.0 <= threshold <= 1.0
    if not ok:
        raise InvalidValueError(f"threshold: expected a probability in [0, 1], got {threshold!r}")
    return float(threshold)


def positive_score(x: ClassInputs, positive: Positive) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive score (summed probability of the positive classes) and 0/1 truth, each ``[..., N]``."""
    ids = check_positive_classes(positive, x.probs.shape[-1])
    idx = torch.tensor(ids, device=x.probs.device)
    score = x.probs.index_select(-1, idx).sum(-1)
    truth = torch.isin(x.targets, idx)
    return score, truth


@dataclass(frozen=True)
class ConfusionCounts:
    """Per-task counts of the positive-vs-rest decision at a threshold, each ``[...]`` float64."""

    tp: torch.Tensor
    fp: torch.Tensor
    tn: torch.Tensor
    fn: torch.Tensor

    @property
    def n(self) -> torch.Tensor:
        """Cases counted."""
        return self.tp + self.fp + self.tn + self.fn

    @property
    def prevalence(self) -> torch.Tensor:
        """Fraction of positive cases."""
        return (self.tp + self.fn) / self.n


def _ratio(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a / b`` with NaN where ``b == 0`` (undefined, not 0)."""
    return torch.where(b > 0, a / b.clamp_min(1e-300), torch.full_like(a, math.nan))


def confusion_counts(
    pred: PredLike, targets: ArrayLike, threshold: float = 0.5, positive: Positive = 1, mask: ArrayLike | None = None
) -> ConfusionCounts:
    """TP / FP / TN / FN per task of the call "positive score >= ``threshold``"."""
    x = class_inputs(pred, targets, mask)
    score, truth = positive_score(x, positive)
    call = score >= check_threshold(threshold)
    present = torch.ones_like(truth) if x.mask is None else x.mask

    def count(sel: torch.Tensor) -> torch.Tensor:
        return (sel & present).sum(-1).to(torch.float64)

    return ConfusionCounts(count(call & truth), count(call & ~truth), count(~call & ~truth), count(~call & truth))


def balanced_accuracy(pred: PredLike, targets: ArrayLike, mask: ArrayLike | None = None) -> torch.Tensor:
    """Mean over the classes present in a task of the recall of that class (top-1 calls), ``[...]``.

    Equals scikit-learn's ``balanced_accuracy_score``; 1/C is chance for C balanced classes.
    """
    x = class_inputs(pred, targets, mask)
    c = x.probs.shape[-1]
    hit = x.probs.argmax(-1).eq(x.targets)
    present = torch.ones_like(hit) if x.mask is None else x.mask
    onehot = torch.nn.functional.one_hot(x.targets, c).bool() & present.unsqueeze(-1)  # [..., N, C]
    n_c = onehot.sum(-2).to(torch.float64)
    hit_c = (onehot & hit.unsqueeze(-1)).sum(-2).to(torch.float64)
    recall = torch.where(n_c > 0, hit_c / n_c.clamp_min(1), torch.zeros_like(n_c))
    return recall.sum(-1) / (n_c > 0).sum(-1).to(torch.float64)


def _per_row(fn, *tensors: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """Apply ``fn`` to every row of ``[..., N]`` tensors; returns ``[...]`` float64."""
    lead = tensors[0].shape[:-1]
    flat = [t.reshape(-1, t.shape[-1]) for t in tensors]
    out = torch.tensor([fn(*rows) for rows in zip(*flat)], dtype=torch.float64)
    return out.reshape(lead)


def _binary_auc(score: torch.Tensor, truth: torch.Tensor, present: torch.Tensor) -> float:
    s, y = score[present], truth[present]
    if bool(y.all()) or not bool(y.any()):
        return math.nan
    return float(_auroc(s[~y], s[y]))


def roc_auc(
    pred: PredLike, targets: ArrayLike, positive: Positive | None = None, mask: ArrayLike | None = None
) -> torch.Tensor:
    """Area under the ROC curve per task, ``[...]`` (ties count one half).

    Args:
        positive: the positive class(es). None: class 1 for two classes, and for more the
            one-vs-rest macro average over the classes present in the task with both positive
            and negative cases (scikit-learn's ``multi_class="ovr", average="macro"``).

    Returns:
        NaN for a task without both a positive and a negative case.
    """
    x = class_inputs(pred, targets, mask)
    c = x.probs.shape[-1]
    present = torch.ones_like(x.targets, dtype=torch.bool) if x.mask is None else x.mask
    if positive is not None or c == 2:
        score, truth = positive_score(x, 1 if positive is None else positive)
        return _per_row(_binary_auc, score.double(), truth, present)
    per_class = torch.stack(
        [_per_row(_binary_auc, x.probs[..., k].double(), x.targets.eq(k), present) for k in range(c)], -1
    )
    defined = ~torch.isnan(per_class)
    total = torch.where(defined, per_class, torch.zeros_like(per_class)).sum(-1)
    return _ratio(total, defined.sum(-1).to(torch.float64))


def sensitivity(
    pred: PredLike, targets: ArrayLike, threshold: float = 0.5, positive: Positive = 1, mask: ArrayLike | None = None
) -> torch.Tensor:
    """True-positive rate ``TP / (TP + FN)`` per task; NaN without positive cases."""
    k = confusion_counts(pred, targets, threshold, positive, mask)
    return _ratio(k.tp, k.tp + k.fn)


def specificity(
    pred: PredLike, targets: ArrayLike, threshold: float = 0.5, positive: Positive = 1, mask: ArrayLike | None = None
) -> torch.Tensor:
    """True-negative rate ``TN / (TN + FP)`` per task; NaN without negative cases."""
    k = confusion_counts(pred, targets, threshold, positive, mask)
    return _ratio(k.tn, k.tn + k.fp)


def _sens_at_spec(target: float, score: torch.Tensor, truth: torch.Tensor, present: torch.Tensor) -> float:
    s, y = score[present], truth[present]
    neg, pos = s[~y].sort().values, s[y]
    if neg.numel() == 0 or pos.numel() == 0:
        return math.nan
    # calls are "score >= tau"; specificity >= target needs ceil(target * n0) negatives below tau,
    # and the smallest such tau is just above the k-th smallest negative score (1e-9 absorbs
    # float error in target * n0, e.g. 0.9 * 10 = 9.000000000000002)
    k = math.ceil(target * neg.numel() - 1e-9)
    if k == 0:
        return 1.0
    return float((pos > neg[k - 1]).double().mean())


def sensitivity_at_specificity(
    pred: PredLike,
    targets: ArrayLike,
    specificity: float = 0.9,
    positive: Positive = 1,
    mask: ArrayLike | None = None,
) -> torch.Tensor:
    """Highest sensitivity of any threshold whose specificity is at least ``specificity``, ``[...]``.

    The threshold is chosen within each task (an oracle operating point: it shows what the
    ranking allows; a deployed threshold comes from validation data, see
    :mod:`bayesmeta.referral`). Equals the largest TPR of scikit-learn's ``roc_curve`` with
    ``1 - FPR >= specificity``.
    """
    ok = isinstance(specificity, int | float) and not isinstance(specificity, bool) and 0.0 <= specificity <= 1.0
    if not ok:
        raise InvalidValueError(f"specificity: expected a value in [0, 1], got {specificity!r}")
    x = class_inputs(pred, targets, mask)
    score, truth = positive_score(x, positive)
    present = torch.ones_like(truth) if x.mask is None else x.mask
    return _per_row(lambda s, y, m: _sens_at_spec(float(specificity), s, y, m), score.double(), truth, present)


def _prevalence(prevalence: float | None, counts: ConfusionCounts) -> torch.Tensor:
    if prevalence is None:
        return counts.prevalence
    if isinstance(prevalence, bool) or not isinstance(prevalence, int | float) or not 0.0 <= prevalence <= 1.0:
        raise InvalidValueError(f"prevalence: expected a fraction in [0, 1] or None (the episode's), got {prevalence!r}")
    return torch.full_like(counts.tp, float(prevalence))


def ppv(
    pred: PredLike,
    targets: ArrayLike,
    threshold: float = 0.5,
    positive: Positive = 1,
    prevalence: float | None = None,
    mask: ArrayLike | None = None,
) -> torch.Tensor:
    """Positive predictive value per task, ``sens*pi / (sens*pi + (1-spec)*(1-pi))``.

    Args:
        prevalence: the prevalence ``pi`` to report it at; None uses the episode's own, when it
            equals ``TP / (TP + FP)`` (so pick the episode design's prevalence with care: a
            balanced episode reports PPV at 50% prevalence).

    Returns:
        NaN where undefined (no positive calls, or no positive or negative cases for a given pi).
    """
    k = confusion_counts(pred, targets, threshold, positive, mask)
    pi = _prevalence(prevalence, k)
    if prevalence is None:
        return _ratio(k.tp, k.tp + k.fp)
    sens, spec = _ratio(k.tp, k.tp + k.fn), _ratio(k.tn, k.tn + k.fp)
    return _ratio(sens * pi, sens * pi + (1 - spec) * (1 - pi))


def npv(
    pred: PredLike,
    targets: ArrayLike,
    threshold: float = 0.5,
    positive: Positive = 1,
    prevalence: float | None = None,
    mask: ArrayLike | None = None,
) -> torch.Tensor:
    """Negative predictive value per task, ``spec*(1-pi) / (spec*(1-pi) + (1-sens)*pi)`` (see :func:`ppv`)."""
    k = confusion_counts(pred, targets, threshold, positive, mask)
    pi = _prevalence(prevalence, k)
    if prevalence is None:
        return _ratio(k.tn, k.tn + k.fn)
    sens, spec = _ratio(k.tp, k.tp + k.fn), _ratio(k.tn, k.tn + k.fp)
    return _ratio(spec * (1 - pi), spec * (1 - pi) + (1 - sens) * pi)


def missed_positive_rate(
    pred: PredLike, targets: ArrayLike, threshold: float = 0.5, positive: Positive = 1, mask: ArrayLike | None = None
) -> torch.Tensor:
    """Missed positives per case, ``FN / N``, per task (``1 - sensitivity`` is FN per positive)."""
    k = confusion_counts(pred, targets, threshold, positive, mask)
    return k.fn / k.n


@torch.no_grad()
def clinical_metrics(
    pred: PredLike,
    targets: ArrayLike,
    mask: ArrayLike | None = None,
    *,
    positive: Positive = 1,
    threshold: float = 0.5,
    target_specificity: float = 0.9,
    prevalence: float | None = None,
) -> dict[str, torch.Tensor]:
    """Every clinical metric per task (keys of :data:`CLINICAL_METRIC_INFO`), each ``[T]`` float64.

    ``auroc`` is the AUROC of the positive score (so of ``positive``, one class or a set);
    the one-vs-rest macro AUROC of a multi-class task is :func:`roc_auc` with ``positive=None``.
    """
    k = confusion_counts(pred, targets, threshold, positive, mask)
    out = {
        "balanced_accuracy": balanced_accuracy(pred, targets, mask),
        "auroc": roc_auc(pred, targets, positive, mask),
        "sensitivity": _ratio(k.tp, k.tp + k.fn),
        "specificity": _ratio(k.tn, k.tn + k.fp),
        "sensitivity_at_specificity": sensitivity_at_specificity(pred, targets, target_specificity, positive, mask),
        "ppv": ppv(pred, targets, threshold, positive, prevalence, mask),
        "npv": npv(pred, targets, threshold, positive, prevalence, mask),
        "missed_positive_rate": k.fn / k.n,
        "prevalence": k.prevalence,
    }
    return {name: out[name].detach().to(torch.float64).cpu() for name in CLINICAL_METRIC_INFO}


def aggregate_clinical(
    per_task: dict[str, torch.Tensor], level: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> dict[str, MeanCI]:
    """Mean and bootstrap CI over the tasks where each metric is defined (``MeanCI.n`` says how many).

    Metrics defined in no task are left out.
    """
    out: dict[str, MeanCI] = {}
    for name, v in per_task.items():
        t = torch.as_tensor(v, dtype=torch.float64).reshape(-1)
        t = t[~torch.isnan(t)]
        if t.numel():
            out[name] = mean_ci(t, level=level, n_boot=n_boot, seed=seed)
    return out
