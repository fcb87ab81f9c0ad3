"""Nonconformity scores of split conformal prediction (private to :mod:`bayesmeta.calibration`).

A score measures how badly a candidate label fits a prediction; a conformal set holds every
candidate whose score is at most the calibrated quantile ``qhat``. Because the set of a point is
``{c : score(x, c) <= qhat}`` and its calibration score is ``score(x, y)``, the true label is in
the set exactly when its score is at most ``qhat``: this consistency is what the coverage proof
needs, so every set here is defined through the same function that scores calibration points.

Classification (Angelopoulos & Bates, "A Gentle Introduction to Conformal Prediction", 2021),
``p`` the mixture's class probabilities ``[T, Q, C]``:

- ``lac``: ``1 - p_c`` (least ambiguous set-valued classifier, Sadinle et al. 2019): smallest sets
  on average, but coverage is spread unevenly (easy points over-covered, hard points under).
- ``aps``: the probability mass of the classes ranked above ``c`` plus ``u * p_c``
  (Romano et al. 2020); adaptive: sets grow with the predictive's uncertainty.
- ``raps``: ``aps`` plus ``lam * max(0, rank(c) - k_reg)`` with 1-based ranks (Angelopoulos et
  al. 2021): penalizes long tails of unlikely classes, giving smaller, more stable sets.

``u`` is 1 for deterministic scores or a Uniform(0, 1) draw per query point (shared by all
classes of that point) for randomized ones.

Regression, mixture mean ``mu`` and standard deviation ``sigma`` ``[T, Q, Dy]``:

- ``normalized``: ``|y - mu| / sigma``; interval ``mu -/+ qhat * sigma``.
- ``absolute``: ``|y - mu|``; interval ``mu -/+ qhat`` (same width everywhere).
- ``cqr``: conformalized quantile regression (Romano et al. 2019) on the predictive's own
  quantiles ``lo, hi`` at ``alpha/2`` and ``1 - alpha/2``: ``max(lo - y, y - hi)``; interval
  ``[lo - qhat, hi + qhat]``. It follows a skewed or multimodal mixture, which a symmetric
  interval around the mean cannot.
"""

from __future__ import annotations

import torch

from bayesmeta._validation import ArrayLike, as_tensor, check_finite, describe
from bayesmeta.exceptions import InvalidValueError, ShapeError
from bayesmeta.predictive import GaussianPredictive

__all__ = [
    "CLASSIFICATION_SCORES",
    "REGRESSION_SCORES",
    "check_real_targets",
    "class_scores",
    "regression_interval",
    "regression_parts",
    "regression_scores",
]

CLASSIFICATION_SCORES: tuple[str, ...] = ("lac", "aps", "raps")
REGRESSION_SCORES: tuple[str, ...] = ("normalized", "absolute", "cqr")



def check_real_targets(pred: GaussianPredictive, targets: ArrayLike) -> torch.Tensor:
    """Regression targets checked against ``pred``: ``[T, Q, Dy]`` real and finite.

    ``[T, Q]`` targets are accepted for ``Dy = 1`` (a trailing dim is added).

    Raises:
        ShapeError: targets whose shape does not match the predictive.
        InvalidValueError: integer or non-finite targets.
    """
    y = as_tensor("targets", targets)
    if pred.event_dim == 1 and tuple(y.shape) == tuple(pred.batch_shape):
        y = y.unsqueeze(-1)
    want = (*pred.batch_shape, pred.event_dim)
    if tuple(y.shape) != want:
        raise ShapeError(f"targets: expected shape {list(want)} ([T, Q, Dy]) to match the predictive, got {describe(y)}")
    if not y.is_floating_point():
        raise InvalidValueError(f"targets: expected real-valued targets, got {describe(y)}")
    check_finite("targets", y)
    return y

def class_scores(
    probs: torch.Tensor, score: str, u: torch.Tensor | None = None, k_reg: int = 1, lam: float = 0.0
) -> torch.Tensor:
    """Scores of every candidate class.

    Args:
        probs: ``[..., C]`` class probabilities.
        score: one of :data:`CLASSIFICATION_SCORES`.
        u: ``[...]`` uniform draws for randomized ``aps``/``raps``, or None (``u = 1``).
        k_reg: RAPS: ranks up to ``k_reg`` carry no penalty.
        lam: RAPS: penalty per rank beyond ``k_reg``.

    Returns:
        ``[..., C]`` scores; lower means more conforming.
    """
    if score == "lac":
        return 1.0 - probs
    order = torch.argsort(probs, dim=-1, descending=True, stable=True)
    sorted_p = probs.gather(-1, order)
    before = torch.cumsum(sorted_p, -1) - sorted_p  # mass of the classes ranked strictly above
    own = sorted_p if u is None else u.unsqueeze(-1) * sorted_p
    s_sorted = before + own
    if score == "raps":
        ranks = torch.arange(1, probs.shape[-1] + 1, dtype=probs.dtype, device=probs.device)
        s_sorted = s_sorted + lam * (ranks - k_reg).clamp_min(0.0)
    # scatter back from rank order to class order
    return torch.empty_like(s_sorted).scatter_(-1, order, s_sorted)


def regression_parts(pred: GaussianPredictive, score: str, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference bounds and scale of a regression score.

    Every regression score is ``max((lower - y) / scale, (y - upper) / scale)`` and its interval
    for ``qhat`` is ``[lower - qhat * scale, upper + qhat * scale]``. For ``normalized`` and
    ``absolute`` both bounds are the mean, which makes the score ``|y - mu| / scale``.

    Returns:
        ``(bounds, scale)``: ``bounds`` ``[T, Q, Dy, 2]`` (lower, upper), ``scale`` ``[T, Q, Dy]``.
    """
    if score == "cqr":
        lo, hi = pred.icdf(alpha / 2.0), pred.icdf(1.0 - alpha / 2.0)
        return torch.stack([lo, hi], -1), torch.ones_like(lo)
    mu = pred.mean
    scale = pred.stddev if score == "normalized" else torch.ones_like(mu)
    return torch.stack([mu, mu], -1), scale


def regression_scores(bounds: torch.Tensor, scale: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``max((lower - y) / scale, (y - upper) / scale)``, ``[T, Q, Dy]``."""
    return torch.maximum((bounds[..., 0] - y) / scale, (y - bounds[..., 1]) / scale)


def regression_interval(bounds: torch.Tensor, scale: torch.Tensor, qhat: torch.Tensor) -> torch.Tensor:
    """``[lower - qhat * scale, upper + qhat * scale]`` as ``[T, Q, Dy, 2]``; ``qhat`` is ``[Dy]``."""
    return torch.stack([bounds[..., 0] - qhat * scale, bounds[..., 1] + qhat * scale], -1)
