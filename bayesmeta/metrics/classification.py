"""Classification metrics: accuracy, NLL, Brier score, ECE/MCE, classwise ECE, reliability data.

Every function takes ``(pred, targets)`` in the style of ``gpytorch.metrics``:

- ``pred``: a :class:`~bayesmeta.predictive.CategoricalPredictive` (its mixture probabilities
  ``[T, Q, C]`` are used) or a probability tensor ``[..., N, C]``;
- ``targets``: int class indices ``[T, Q]`` / ``[..., N]``;
- ``mask``: optional bool ``[T, Q]`` / ``[..., N]``, True where a point is present.

The last batch dim is averaged over and the others are kept: a predictive gives per-task values
``[T]``, flat probabilities ``[N, C]`` a scalar tensor. Calibration errors are computed within
each task (bins are filled with that task's query points).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bayesmeta.masked import masked_mean
from bayesmeta.metrics._binning import Binning, bin_index, bin_stats, check_binning
from bayesmeta.metrics._inputs import ArrayLike, ClassInputs, class_inputs
from bayesmeta.predictive import CategoricalPredictive

__all__ = [
    "accuracy",
    "categorical_nll",
    "brier_score",
    "ece",
    "mce",
    "classwise_ece",
    "ReliabilityDiagram",
    "reliability_diagram",
]

PredLike = CategoricalPredictive | ArrayLike


def _top_label(x: ClassInputs) -> tuple[torch.Tensor, torch.Tensor]:
    """Confidence ``[..., N]`` and 0/1 correctness ``[..., N]`` of the top-1 prediction."""
    conf, pred = x.probs.max(-1)
    return conf, pred.eq(x.targets).to(conf.dtype)


def accuracy(pred: PredLike, targets: ArrayLike, mask: ArrayLike | None = None) -> torch.Tensor:
    """Top-1 accuracy of the predictive mean, ``[...]`` (per task for a predictive).

    Ties between classes go to the lowest class index (``torch.max``).
    """
    x = class_inputs(pred, targets, mask)
    return masked_mean(_top_label(x)[1], x.mask, dim=-1)


def categorical_nll(pred: PredLike, targets: ArrayLike, mask: ArrayLike | None = None) -> torch.Tensor:
    """Mean negative log predictive probability of the targets (nats), ``[...]``.

    The log-probability is floored at ``log(eps)``, ``eps`` the machine epsilon of the dtype, as
    scikit-learn's ``log_loss`` clips: a confident mistake (probability exactly 0) costs about 36
    nats in float64 instead of an infinite value that would poison every average.
    """
    x = class_inputs(pred, targets, mask)
    idx = x.targets.unsqueeze(-1)
    if x.given_log_probs is not None:
        lp = x.given_log_probs.gather(-1, idx).squeeze(-1)
    else:
        lp = x.probs.gather(-1, idx).squeeze(-1).log()
    eps = torch.finfo(lp.dtype).eps
    return masked_mean(-lp.clamp_min(float(np.log(eps))), x.mask, dim=-1)


def brier_score(pred: PredLike, targets: ArrayLike, mask: ArrayLike | None = None) -> torch.Tensor:
    """Multiclass Brier score ``sum_c (p_c - 1[y = c])^2`` averaged over points, in ``[0, 2]``."""
    x = class_inputs(pred, targets, mask)
    onehot = torch.nn.functional.one_hot(x.targets, x.probs.shape[-1]).to(x.probs.dtype)
    return masked_mean(((x.probs - onehot) ** 2).sum(-1), x.mask, dim=-1)


def _calibration(
    conf: torch.Tensor, hit: torch.Tensor, mask: torch.Tensor | None, n_bins: int, binning: str, norm: str
) -> torch.Tensor:
    count, s_conf, s_hit = bin_stats(conf, hit, mask, n_bins, binning)
    gap = (s_hit - s_conf).abs()
    if norm == "l1":
        return gap.sum(-1) / count.sum(-1)
    per_bin = torch.where(count > 0, gap / count.clamp_min(1), torch.zeros_like(gap))
    return per_bin.max(-1).values


def ece(
    pred: PredLike,
    targets: ArrayLike,
    n_bins: int = 15,
    binning: Binning = "equal_width",
    mask: ArrayLike | None = None,
) -> torch.Tensor:
    """Top-label expected calibration error, ``sum_b (n_b / n) |acc_b - conf_b|``.

    Args:
        pred: predictive or probabilities ``[..., N, C]``.
        targets: ``[..., N]`` class indices.
        n_bins: number of confidence bins K >= 1.
        binning: ``"equal_width"`` (the usual ECE) or ``"equal_mass"`` (adaptive ECE: bins with
            equal numbers of points).
        mask: optional ``[..., N]`` bool.

    Returns:
        ``[...]``: per task for a predictive, a scalar for flat inputs. In ``[0, 1]``.
    """
    check_binning(n_bins, binning)
    x = class_inputs(pred, targets, mask)
    conf, hit = _top_label(x)
    return _calibration(conf, hit, x.mask, n_bins, binning, "l1")


def mce(
    pred: PredLike,
    targets: ArrayLike,
    n_bins: int = 15,
    binning: Binning = "equal_width",
    mask: ArrayLike | None = None,
) -> torch.Tensor:
    """Maximum calibration error ``max_b |acc_b - conf_b|`` over non-empty bins, ``[...]``.

    Arguments as in :func:`ece`.
    """
    check_binning(n_bins, binning)
    x = class_inputs(pred, targets, mask)
    conf, hit = _top_label(x)
    return _calibration(conf, hit, x.mask, n_bins, binning, "max")


def classwise_ece(
    pred: PredLike,
    targets: ArrayLike,
    n_bins: int = 15,
    binning: Binning = "equal_width",
    mask: ArrayLike | None = None,
) -> torch.Tensor:
    """Classwise ECE (Kull et al., 2019): the mean over classes c of the ECE of ``p_c`` for ``y = c``.

    For every class the points are binned by their probability of that class, and each bin's mean
    probability is compared with the frequency of the class in it. Arguments as in :func:`ece`.

    Returns:
        ``[...]`` in ``[0, 1]``.
    """
    check_binning(n_bins, binning)
    x = class_inputs(pred, targets, mask)
    n_classes = x.probs.shape[-1]
    conf = x.probs.movedim(-1, -2)  # [..., C, N]
    hit = torch.nn.functional.one_hot(x.targets, n_classes).to(conf.dtype).movedim(-1, -2)
    m = None if x.mask is None else x.mask.unsqueeze(-2).expand_as(conf)
    return _calibration(conf, hit, m, n_bins, binning, "l1").mean(-1)


@dataclass(frozen=True)
class ReliabilityDiagram:
    """Top-label reliability-diagram data for one pooled set of predictions.

    Attributes:
        bin_lower: ``[K]`` lower end of each bin (for equal-mass bins: the smallest confidence in
            it, NaN when empty).
        bin_upper: ``[K]`` upper end (equal-mass: the largest confidence in it).
        confidence: ``[K]`` mean confidence per bin, NaN for an empty bin.
        accuracy: ``[K]`` fraction of correct top-1 predictions per bin, NaN for an empty bin.
        count: ``[K]`` int64 number of points per bin.
        ece: the ECE of these bins.
        mce: the MCE of these bins.
        binning: ``"equal_width"`` or ``"equal_mass"``.
    """

    bin_lower: torch.Tensor
    bin_upper: torch.Tensor
    confidence: torch.Tensor
    accuracy: torch.Tensor
    count: torch.Tensor
    ece: float
    mce: float
    binning: str

    @property
    def n_bins(self) -> int:
        """K."""
        return int(self.count.shape[0])


def reliability_diagram(
    pred: PredLike,
    targets: ArrayLike,
    n_bins: int = 15,
    binning: Binning = "equal_width",
    mask: ArrayLike | None = None,
) -> ReliabilityDiagram:
    """Per-bin confidence, accuracy and count of all points pooled (over tasks too).

    Args:
        pred: predictive or probabilities ``[..., N, C]``; every point of every task is pooled.
        targets: ``[..., N]`` class indices.
        n_bins: K >= 1.
        binning: ``"equal_width"`` or ``"equal_mass"``.
        mask: optional ``[..., N]`` bool; absent points are dropped.
    """
    check_binning(n_bins, binning)
    x = class_inputs(pred, targets, mask)
    conf, hit = _top_label(x)
    conf, hit = conf.reshape(-1), hit.reshape(-1)
    if x.mask is not None:
        keep = x.mask.reshape(-1)
        conf, hit = conf[keep], hit[keep]
    conf64, hit64 = conf.detach().double(), hit.detach().double()
    count, s_conf, s_hit = bin_stats(conf64, hit64, None, n_bins, binning)
    nan = torch.full_like(count, float("nan"))
    nonempty = count > 0
    mean_conf = torch.where(nonempty, s_conf / count.clamp_min(1), nan)
    mean_acc = torch.where(nonempty, s_hit / count.clamp_min(1), nan)
    if binning == "equal_width":
        edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64)
        lower, upper = edges[:-1], edges[1:]
    else:
        idx = bin_index(conf64, None, n_bins, binning)
        lower = torch.full((n_bins,), float("inf"), dtype=torch.float64).scatter_reduce(0, idx, conf64, "amin")
        upper = torch.full((n_bins,), -float("inf"), dtype=torch.float64).scatter_reduce(0, idx, conf64, "amax")
        lower, upper = torch.where(nonempty, lower, nan), torch.where(nonempty, upper, nan)
    gap = (s_hit - s_conf).abs()
    return ReliabilityDiagram(
        bin_lower=lower,
        bin_upper=upper,
        confidence=mean_conf,
        accuracy=mean_acc,
        count=count.round().long(),
        ece=float(gap.sum() / count.sum()),
        mce=float(torch.where(nonempty, gap / count.clamp_min(1), torch.zeros_like(gap)).max()),
        binning=binning,
    )
