"""Selective prediction: refer the most uncertain cases and measure the risk on the rest.

Points are ranked by an uncertainty score; keeping the ``k`` most certain of ``n`` gives coverage
``k / n`` and selective risk = mean loss of the kept points (0-1 error for classification,
squared error averaged over Dy for regression). Referring the ``r%`` most uncertain cases is
coverage ``1 - r/100``.

Ties in the score are handled exactly rather than by an arbitrary sort order: within a run of
equal scores the cumulative loss is interpolated linearly, which is the expected risk when the
tied points are referred in random order. With no ties this is the usual curve, and the AURC is
the usual ``(1/n) sum_k risk_k`` (Geifman et al., 2019). A constant score therefore gives a flat
curve at the overall risk.

Scores (``score=``): ``"entropy"`` (total predictive entropy, the default),
``"confidence"`` (minus the top-class probability; classification), ``"mutual_information"``
(epistemic; zero for M = 1), ``"expected_entropy"`` (aleatoric), ``"variance"`` (mixture variance
averaged over Dy; regression), or a tensor of per-point scores (higher = more uncertain) with the
shape of the targets' batch (``[T, Q]``, ``[..., N]``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from bayesmeta._validation import check_finite, describe
from bayesmeta.exceptions import InvalidValueError, ShapeError
from bayesmeta.metrics._inputs import ArrayLike, as_tensor, class_inputs, gauss_inputs
from bayesmeta.metrics._ranking import tie_groups
from bayesmeta.metrics.uncertainty import entropy_from_log_probs
from bayesmeta.predictive import CategoricalPredictive, GaussianPredictive

__all__ = [
    "SCORES",
    "RiskCoverage",
    "selective_inputs",
    "risk_coverage_curve",
    "aurc",
    "selective_risk",
    "accuracy_at_coverage",
    "coverage_at_risk",
    "coverage_at_accuracy",
]

SCORES: tuple[str, ...] = ("entropy", "confidence", "mutual_information", "expected_entropy", "variance")

AnyPred = CategoricalPredictive | GaussianPredictive | ArrayLike | tuple[ArrayLike, ArrayLike]


def _is_regression(pred: AnyPred) -> bool:
    return isinstance(pred, GaussianPredictive | tuple)


def selective_inputs(
    pred: AnyPred,
    targets: ArrayLike,
    score: str | ArrayLike = "entropy",
    mask: ArrayLike | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Per-point uncertainty, per-point loss and mask, each ``[..., N]``.

    Args:
        pred: a predictive, class probabilities ``[..., N, C]``, or a ``(mean, variance)`` pair.
        targets: class indices ``[..., N]`` or regression targets ``[..., N, Dy]``.
        score: a score name from :data:`SCORES` or a tensor ``[..., N]`` (higher = more uncertain).
        mask: optional bool ``[..., N]``.
    """
    if _is_regression(pred):
        g = gauss_inputs(pred, targets, mask)  # type: ignore[arg-type]
        loss = ((g.mixture_mean - g.y) ** 2).mean(-1)
        m_mask = g.mask
        named = {
            "variance": lambda: g.mixture_variance.mean(-1),
            "entropy": lambda: 0.5 * g.mixture_variance.log().sum(-1),
            "expected_entropy": lambda: 0.5 * g.variance.log().sum(-1).mean(0),
            "mutual_information": lambda: (
                0.5 * (g.mixture_variance.log().sum(-1) - g.variance.log().sum(-1).mean(0))
            ).clamp_min(0.0),
        }
    else:
        x = class_inputs(pred, targets, mask)  # type: ignore[arg-type]
        conf, top = x.probs.max(-1)
        loss = top.ne(x.targets).to(conf.dtype)
        m_mask = x.mask

        def sample_lp() -> torch.Tensor:
            return pred.sample_log_probs if isinstance(pred, CategoricalPredictive) else x.log_probs.unsqueeze(0)

        named = {
            "entropy": lambda: entropy_from_log_probs(x.log_probs),
            "confidence": lambda: -conf,
            "expected_entropy": lambda: entropy_from_log_probs(sample_lp()).mean(0),
            "mutual_information": lambda: (entropy_from_log_probs(x.log_probs) - entropy_from_log_probs(sample_lp()).mean(0)).clamp_min(0.0),
        }
    if isinstance(score, str):
        if score not in named:
            kind = "regression" if _is_regression(pred) else "classification"
            raise InvalidValueError(f"score: expected one of {sorted(named)} for {kind}, got {score!r}")
        unc = named[score]()
    else:
        unc = as_tensor("score", score)
        if unc.shape != loss.shape:
            raise ShapeError(f"score: expected per-point scores of shape {list(loss.shape)}, got {describe(unc)}")
        unc = unc.to(loss.dtype)
        check_finite("score", unc)
    return unc.detach(), loss.detach(), m_mask


def _cumulative_risk(
    unc: torch.Tensor, loss: torch.Tensor, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tie-averaged selective risk after keeping the k+1 most certain points, ``[..., N]``; and n ``[..., 1]``."""
    n_points = unc.shape[-1]
    if mask is None:
        n = torch.full((*unc.shape[:-1], 1), n_points, dtype=torch.long, device=unc.device)
    else:
        n = mask.sum(-1, keepdim=True)
        unc = unc.masked_fill(~mask, float("inf"))
        loss = torch.where(mask, loss, torch.zeros_like(loss))
    order = torch.argsort(unc, dim=-1, stable=True)
    u, lo = unc.gather(-1, order), loss.gather(-1, order)
    cum = lo.cumsum(-1)
    start, end = tie_groups(u)
    before = torch.where(start > 0, cum.gather(-1, (start - 1).clamp_min(0)), torch.zeros_like(cum))
    at_end = cum.gather(-1, end)
    j = torch.arange(n_points, device=unc.device).expand_as(cum)
    interp = before + (j - start + 1).to(cum.dtype) * (at_end - before) / (end - start + 1).to(cum.dtype)
    return interp / (j + 1).to(cum.dtype), n


@dataclass(frozen=True)
class RiskCoverage:
    """A risk–coverage curve of pooled points.

    Attributes:
        coverage: ``[n]`` fraction kept, ``1/n .. 1``.
        risk: ``[n]`` selective risk (mean loss of the kept points) at each coverage.
        aurc: area under the curve, ``mean(risk)``.
        overall_risk: risk at full coverage (what random referral achieves at any coverage).
    """

    coverage: torch.Tensor
    risk: torch.Tensor
    aurc: float
    overall_risk: float


def risk_coverage_curve(
    pred: AnyPred, targets: ArrayLike, score: str | ArrayLike = "entropy", mask: ArrayLike | None = None
) -> RiskCoverage:
    """Risk–coverage curve of all points pooled over tasks (arguments as :func:`selective_inputs`)."""
    unc, loss, m = selective_inputs(pred, targets, score, mask)
    unc, loss = unc.reshape(-1), loss.reshape(-1)
    if m is not None:
        keep = m.reshape(-1)
        unc, loss = unc[keep], loss[keep]
    risk, _ = _cumulative_risk(unc.double(), loss.double(), None)
    n = risk.shape[0]
    cov = torch.arange(1, n + 1, dtype=torch.float64) / n
    return RiskCoverage(cov, risk, float(risk.mean()), float(risk[-1]))


def aurc(
    pred: AnyPred, targets: ArrayLike, score: str | ArrayLike = "entropy", mask: ArrayLike | None = None
) -> torch.Tensor:
    """Area under the risk–coverage curve, per task ``[...]``; lower is better."""
    unc, loss, m = selective_inputs(pred, targets, score, mask)
    risk, n = _cumulative_risk(unc, loss, m)
    if m is not None:
        j = torch.arange(risk.shape[-1], device=risk.device)
        risk = torch.where(j < n, risk, torch.zeros_like(risk))
    return risk.sum(-1) / n.squeeze(-1).to(risk.dtype)


def _check_fraction(name: str, v: float, closed_low: bool) -> float:
    ok = isinstance(v, int | float) and not isinstance(v, bool) and (0.0 <= v <= 1.0 if closed_low else 0.0 < v <= 1.0)
    if not ok:
        interval = "[0, 1]" if closed_low else "(0, 1]"
        raise InvalidValueError(f"{name}: expected a value in {interval}, got {v!r}")
    return float(v)


def selective_risk(
    pred: AnyPred,
    targets: ArrayLike,
    coverage: float,
    score: str | ArrayLike = "entropy",
    mask: ArrayLike | None = None,
) -> torch.Tensor:
    """Risk on the ``ceil(coverage * n)`` most certain points of each task, ``[...]``."""
    c = _check_fraction("coverage", coverage, closed_low=False)
    unc, loss, m = selective_inputs(pred, targets, score, mask)
    risk, n = _cumulative_risk(unc, loss, m)
    k = torch.ceil(n.to(torch.float64) * c - 1e-9).long().clamp(1) - 1
    return risk.gather(-1, torch.minimum(k, n - 1)).squeeze(-1)


def accuracy_at_coverage(
    pred: AnyPred,
    targets: ArrayLike,
    coverage: float,
    score: str | ArrayLike = "entropy",
    mask: ArrayLike | None = None,
) -> torch.Tensor:
    """Classification accuracy on the ``coverage`` fraction of most certain points, ``[...]``."""
    if _is_regression(pred):
        raise InvalidValueError("pred: accuracy_at_coverage needs a classification predictive; use selective_risk")
    return 1.0 - selective_risk(pred, targets, coverage, score, mask)


def coverage_at_risk(
    pred: AnyPred,
    targets: ArrayLike,
    max_risk: float,
    score: str | ArrayLike = "entropy",
    mask: ArrayLike | None = None,
) -> torch.Tensor:
    """Largest coverage whose selective risk is at most ``max_risk``, ``[...]``; 0 if none.

    ``1 - coverage`` is the fraction of cases to refer.
    """
    if isinstance(max_risk, bool) or not isinstance(max_risk, int | float) or not math.isfinite(max_risk):
        raise InvalidValueError(f"max_risk: expected a finite number, got {max_risk!r}")
    unc, loss, m = selective_inputs(pred, targets, score, mask)
    risk, n = _cumulative_risk(unc, loss, m)
    j = torch.arange(risk.shape[-1], device=risk.device)
    ok = (risk <= max_risk + 1e-12) & (j < n)
    k = torch.where(ok, j + 1, torch.zeros_like(j)).max(-1).values
    return k.to(risk.dtype) / n.squeeze(-1).to(risk.dtype)


def coverage_at_accuracy(
    pred: AnyPred,
    targets: ArrayLike,
    target_accuracy: float,
    score: str | ArrayLike = "entropy",
    mask: ArrayLike | None = None,
) -> torch.Tensor:
    """Largest coverage at which selective accuracy reaches ``target_accuracy``, ``[...]``; 0 if none.

    "Refer the ``1 - coverage`` most uncertain cases and the rest are ``target_accuracy``
    accurate."
    """
    if _is_regression(pred):
        raise InvalidValueError("pred: coverage_at_accuracy needs a classification predictive; use coverage_at_risk")
    a = _check_fraction("target_accuracy", target_accuracy, closed_low=True)
    return coverage_at_risk(pred, targets, 1.0 - a, score, mask)
