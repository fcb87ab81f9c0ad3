"""Decomposing predictive uncertainty from the M posterior samples or particles.

    total     H[ E_m p_m ]          predictive entropy
    aleatoric E_m H[ p_m ]          expected entropy: noise every member predicts
    epistemic total - aleatoric     mutual information between the label and the parameters

For a :class:`~bayesmeta.predictive.GaussianPredictive` the entropy of a Gaussian mixture has no
closed form; the predictive's moment-matched entropy is used (see its docstring), so the
"mutual information" there is an epistemic *score* rather than an exact mutual information.

Values are per point (``[T, Q]`` for a predictive), not averaged: they are uncertainty scores for
referral and shift detection; average them yourself (or use :func:`~bayesmeta.metrics.task_metrics`).
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch

from bayesmeta.exceptions import InvalidValueError
from bayesmeta.metrics._inputs import ArrayLike, as_tensor, check_probs
from bayesmeta.predictive import CategoricalPredictive, GaussianPredictive

__all__ = [
    "predictive_entropy",
    "expected_entropy",
    "mutual_information",
    "uncertainty_decomposition",
    "entropy_from_log_probs",
    "default_score",
    "warn_if_constant",
]

UncertaintyInput = CategoricalPredictive | GaussianPredictive | ArrayLike


def _sample_log_probs(x: ArrayLike) -> torch.Tensor:
    """Per-member log-probabilities from a ``[M, ..., C]`` probability tensor (checked)."""
    p = check_probs("sample_probs", as_tensor("sample_probs", x), min_dim=2)
    return p.log()


def entropy_from_log_probs(lp: torch.Tensor) -> torch.Tensor:
    """Entropy ``-sum_c p log p`` over the last dim of log-probabilities ``[..., C]``, with ``0 log 0 = 0``."""
    p = lp.exp()
    return -torch.where(p > 0, p * lp, torch.zeros_like(p)).sum(-1)


def _decompose(pred: UncertaintyInput) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(pred, GaussianPredictive):
        return pred.entropy, pred.expected_entropy
    # for a CategoricalPredictive use 0 log 0 = 0 here: probabilities of exactly zero are legal
    lp = pred.sample_log_probs if isinstance(pred, CategoricalPredictive) else _sample_log_probs(pred)
    m = lp.shape[0]
    mix_lp = torch.logsumexp(lp, dim=0) - torch.log(torch.tensor(float(m), dtype=lp.dtype))
    return entropy_from_log_probs(mix_lp), entropy_from_log_probs(lp).mean(0)


def predictive_entropy(pred: UncertaintyInput) -> torch.Tensor:
    """Total uncertainty ``H[E_m p_m]`` per point (nats).

    Args:
        pred: a predictive, or per-member class probabilities ``[M, ..., C]``.

    Returns:
        ``[T, Q]`` for a predictive, ``[...]`` for a tensor.
    """
    return _decompose(pred)[0]


def expected_entropy(pred: UncertaintyInput) -> torch.Tensor:
    """Aleatoric uncertainty ``E_m H[p_m]`` per point; arguments as :func:`predictive_entropy`."""
    return _decompose(pred)[1]


def mutual_information(pred: UncertaintyInput) -> torch.Tensor:
    """Epistemic uncertainty ``H[E_m p_m] - E_m H[p_m] >= 0`` per point; zero when M = 1."""
    total, alea = _decompose(pred)
    return (total - alea).clamp_min(0.0)


def uncertainty_decomposition(pred: UncertaintyInput) -> dict[str, torch.Tensor]:
    """``{"total": ..., "aleatoric": ..., "epistemic": ...}``, each per point."""
    total, alea = _decompose(pred)
    return {"total": total, "aleatoric": alea, "epistemic": (total - alea).clamp_min(0.0)}


def default_score(pred: UncertaintyInput, purpose: Literal["referral", "shift"] = "referral") -> str:
    """The uncertainty score that means something for this predictive.

    Referral ranks cases by total uncertainty: ``"entropy"``. Shift detection looks for
    epistemic uncertainty: ``"mutual_information"`` when the predictive has M > 1 samples
    (particles, ensembles, sampled posteriors) and ``"entropy"`` for point estimates, whose
    mutual information is identically 0.
    """
    if purpose == "referral":
        return "entropy"
    if purpose != "shift":
        raise InvalidValueError(f"purpose: expected 'referral' or 'shift', got {purpose!r}")
    m = getattr(pred, "n_samples", 1)
    return "mutual_information" if m > 1 else "entropy"


def warn_if_constant(values: torch.Tensor, score: str, what: str) -> bool:
    """Warn (``UserWarning``) when every value of a score is the same; returns whether it was."""
    v = values.detach().reshape(-1)
    if v.numel() > 1 and bool((v == v[0]).all()):
        hint = (
            " (mutual information is identically 0 for point-estimate learners; use 'entropy' or 'confidence')"
            if score == "mutual_information"
            else ""
        )
        warnings.warn(
            f"score {score!r} is constant ({float(v[0]):.4g}) over all {v.numel()} {what}, so it cannot rank "
            f"them{hint}",
            UserWarning,
            stacklevel=3,
        )
        return True
    return False
