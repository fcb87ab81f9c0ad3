"""Split conformal prediction sets and intervals, calibrated across exchangeable tasks.

``SplitConformal(alpha).fit(pred_cal, y_cal)`` scores every query point of the calibration tasks
and keeps the quantile ``qhat``; ``predict(pred_test)`` returns, per test query point, every
candidate label whose score is at most ``qhat``: a boolean set ``[T, Q, C]`` for a
:class:`~bayesmeta.predictive.CategoricalPredictive`, an interval ``[T, Q, Dy, 2]`` for a
:class:`~bayesmeta.predictive.GaussianPredictive`. Scores are described in
:mod:`bayesmeta.calibration.scores`.

**Finite-sample quantile.** With ``n`` calibration scores, ``qhat`` is the ``k``-th smallest,
``k = ceil((n + 1)(1 - alpha))``, i.e. the empirical quantile at level ``k / n`` (never
interpolated). This needs ``k <= n``, i.e. ``n >= 1/alpha - 1`` (9 points for ``alpha = 0.1``,
19 for 0.05); fewer is an error that says how many are needed. When the test point is
exchangeable with the calibration points, ``1 - alpha <= P(y in set)``, and
``P(y in set) < 1 - alpha + 1 / (n + 1)`` when scores have no ties (Vovk et al. 2005; Lei et al.
2018).

**Across tasks (Fisch et al., "Few-shot Conformal Prediction with Auxiliary Tasks", ICML 2021).**
A few-shot task has too few labelled points to calibrate on its own, so the calibration points
are the query points of many *calibration tasks* (e.g. the validation episodes), all pooled:
``n`` is the number of present query points over all calibration tasks. The guarantee is then
*marginal*, per query point, over the draw of the tasks: for a new task drawn like the
calibration tasks and a query point of it, ``P(y in set) >= 1 - alpha``. It is not a guarantee
per task: one task's coverage can be far below ``1 - alpha`` when the predictive fits that task
badly, which is why evaluation reports coverage per task with an interval over tasks.
Query points of one task are correlated (they share the task), so the pooled points are not
exactly exchangeable with a new task's point; exact exchangeability holds for one query point per
calibration task. With ``T`` calibration tasks of ``Q`` points each, the worst case (every point
of a task scoring the same) covers ``ceil(k / Q) / (T + 1)``, at most about ``1 / (T + 1)``
below ``1 - alpha``; with the hundreds of validation tasks of a study this is negligible, and the
tests measure the pooled coverage on tasks with strong task effects.

**Mondrian (class-conditional) conformal** (``by_class=True``; Vovk et al. 2005, Sadinle et al.
2019): one quantile per class, from the calibration points of that class only, and class ``c`` is
in the set when ``score(x, c) <= qhat_c``. The guarantee then holds for every class separately,
``P(y in set | y = c) >= 1 - alpha``, which marginal conformal does not give for rare classes;
every class needs ``1/alpha - 1`` calibration points.

**Randomization** (``randomized``, APS/RAPS only). Deterministic scores (the default) give the
same set for the same predictive, which a clinical user expects; coverage still holds because
the set is defined through the score. Randomized scores (the tutorial's default) shrink sets
toward the exact ``1 - alpha`` level at the cost of sets that depend on a uniform draw per query
point; the draws come from a generator seeded with ``seed`` (calibration) and ``seed + 1``
(prediction), so results are reproducible.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from bayesmeta._validation import ArrayLike, as_tensor, check_mask, describe
from bayesmeta.calibration.scores import (
    CLASSIFICATION_SCORES,
    REGRESSION_SCORES,
    check_real_targets,
    class_scores,
    regression_interval,
    regression_parts,
    regression_scores,
)
from bayesmeta.exceptions import DataError, InvalidValueError, ShapeError
from bayesmeta.predictive import CategoricalPredictive, GaussianPredictive, Predictive

__all__ = ["SplitConformal", "conformal_quantile", "min_calibration_points"]

#: other names users reach for: the CQR score is a quantile score; "normalized" is a normalized residual
_ALIASES = {"quantile": "cqr", "normalized_residual": "normalized", "residual": "absolute"}

# (n + 1)(1 - alpha) is a rational number; float error must not push an exact integer up by one.
_CEIL_EPS = 1e-9


def min_calibration_points(alpha: float) -> int:
    """Smallest ``n`` with ``ceil((n + 1)(1 - alpha)) <= n``, i.e. ``ceil(1/alpha - 1)``."""
    return max(1, math.ceil(1.0 / alpha - 1.0 - _CEIL_EPS))


def conformal_quantile(scores: torch.Tensor, alpha: float, what: str = "calibration points") -> torch.Tensor:
    """The split-conformal quantile: the ``ceil((n + 1)(1 - alpha))``-th smallest of ``n`` scores.

    Args:
        scores: ``[n]`` calibration scores.
        alpha: miscoverage level in (0, 1).
        what: names the points in the error message.

    Raises:
        DataError: fewer than :func:`min_calibration_points` scores.
    """
    n = scores.numel()
    k = math.ceil((n + 1) * (1.0 - alpha) - _CEIL_EPS)
    if k > n or n == 0:
        need = min_calibration_points(alpha)
        raise DataError(
            f"{what}: expected at least {need} points for alpha={alpha:g} "
            f"(ceil((n + 1)(1 - alpha)) <= n), got {n}; use more calibration tasks or a larger alpha"
        )
    return torch.kthvalue(scores.reshape(-1), k).values


class SplitConformal:
    """Split conformal prediction sets (classification) and intervals (regression).

    Args:
        alpha: miscoverage level in (0, 1); sets cover with probability >= ``1 - alpha``.
        score: ``"lac"``, ``"aps"`` or ``"raps"`` for a CategoricalPredictive; ``"normalized"``
            (``|y - mu| / sigma``; alias ``"normalized_residual"``), ``"absolute"`` (``|y - mu|``;
            alias ``"residual"``) or ``"cqr"`` (alias ``"quantile"``) for a GaussianPredictive. ``None``
            picks ``"lac"`` or ``"normalized"`` from the predictive given to :meth:`fit`.
        by_class: Mondrian conformal, one quantile per class (classification only).
        randomized: randomized APS/RAPS scores (see the module docstring); ignored by the others.
        k_reg: RAPS: number of top ranks without penalty (>= 0).
        lam: RAPS: penalty per rank beyond ``k_reg`` (>= 0; the RAPS paper's ``lambda``).
        seed: seed of the uniform draws of randomized scores.

    Attributes (after :meth:`fit`):
        qhat_: the quantile; a scalar tensor, ``[C]`` with ``by_class``, ``[Dy]`` for regression
            (every output dimension is calibrated separately, so coverage holds per dimension).
        n_calibration_: calibration points used (``[C]`` counts with ``by_class``).
        score_: the score in use.

    Example:
        >>> cp = SplitConformal(alpha=0.1, score="aps").fit(val_pred, val_y, val_mask)
        >>> sets = cp.predict(test_pred)  # [T, Q, C] bool
    """

    def __init__(
        self,
        alpha: float = 0.1,
        score: str | None = None,
        by_class: bool = False,
        *,
        randomized: bool = False,
        k_reg: int = 1,
        lam: float = 0.01,
        seed: int = 0,
    ) -> None:
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0.0 < float(alpha) < 1.0:
            raise InvalidValueError(f"alpha: expected a miscoverage level in (0, 1), got {alpha!r}")
        valid = (*CLASSIFICATION_SCORES, *REGRESSION_SCORES)
        score = _ALIASES.get(score, score) if isinstance(score, str) else score
        if score is not None and score not in valid:
            raise InvalidValueError(f"score: expected one of {', '.join(valid)} (or None), got {score!r}")
        if by_class and score in REGRESSION_SCORES:
            raise InvalidValueError(f"by_class: Mondrian conformal is for classification; score {score!r} is a regression score")
        if isinstance(k_reg, bool) or not isinstance(k_reg, int) or k_reg < 0:
            raise InvalidValueError(f"k_reg: expected an integer >= 0, got {k_reg!r}")
        if isinstance(lam, bool) or not isinstance(lam, int | float) or not (math.isfinite(lam) and lam >= 0):
            raise InvalidValueError(f"lam: expected a finite number >= 0, got {lam!r}")
        self.alpha = float(alpha)
        self.score = score
        self.by_class = bool(by_class)
        self.randomized = bool(randomized)
        self.k_reg = int(k_reg)
        self.lam = float(lam)
        self.seed = int(seed)
        self.qhat_: torch.Tensor | None = None
        self.n_calibration_: int | torch.Tensor | None = None
        self.score_: str | None = None
        self._n_classes: int | None = None
        self._event_dim: int | None = None

    # ------------------------------------------------------------------ helpers
    def _resolve_score(self, pred: Predictive) -> str:
        if isinstance(pred, CategoricalPredictive):
            score = self.score or "lac"
            if score not in CLASSIFICATION_SCORES:
                raise InvalidValueError(
                    f"score: {score!r} is a regression score; a CategoricalPredictive takes one of {', '.join(CLASSIFICATION_SCORES)}"
                )
            return score
        if isinstance(pred, GaussianPredictive):
            if self.by_class:
                raise InvalidValueError("by_class: Mondrian conformal is for classification, got a GaussianPredictive")
            score = self.score or "normalized"
            if score not in REGRESSION_SCORES:
                raise InvalidValueError(
                    f"score: {score!r} is a classification score; a GaussianPredictive takes one of {', '.join(REGRESSION_SCORES)}"
                )
            return score
        raise InvalidValueError(f"predictive: expected a CategoricalPredictive or GaussianPredictive, got {type(pred).__name__}")

    def _uniform(self, shape: torch.Size, offset: int, generator: torch.Generator | None) -> torch.Tensor | None:
        if not (self.randomized and self.score_ in ("aps", "raps")):
            return None
        g = generator if generator is not None else torch.Generator().manual_seed(self.seed + offset)
        return torch.rand(shape, generator=g, dtype=torch.float64)

    def _all_scores(self, pred: CategoricalPredictive, u: torch.Tensor | None) -> torch.Tensor:
        assert self.score_ is not None
        return class_scores(pred.probs.detach().double().cpu(), self.score_, u, self.k_reg, self.lam)

    @staticmethod
    def _class_targets(pred: CategoricalPredictive, targets: ArrayLike) -> torch.Tensor:
        y = as_tensor("targets", targets)
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise InvalidValueError(f"targets: expected integer class indices, got {describe(y)}")
        if tuple(y.shape) != tuple(pred.batch_shape):
            raise ShapeError(f"targets: expected shape {list(pred.batch_shape)} ([T, Q]) to match the predictive, got {describe(y)}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= pred.n_classes):
            raise InvalidValueError(
                f"targets: expected class indices in [0, {pred.n_classes}), got values in [{int(y.min())}, {int(y.max())}]"
            )
        return y.long().cpu()

    # --------------------------------------------------------------------- API
    def fit(self, predictive: Predictive, targets: ArrayLike, mask: ArrayLike | None = None) -> SplitConformal:
        """Calibrate on the query points of calibration tasks (all pooled; see the module docstring).

        Args:
            predictive: predictive of the calibration tasks' query points, ``[T, Q]`` batch.
            targets: ``[T, Q]`` class indices, or ``[T, Q, Dy]`` (``[T, Q]`` when ``Dy = 1``) values.
            mask: optional bool ``[T, Q]``; only present points are calibration points.

        Returns:
            ``self``, fitted.

        Raises:
            InvalidValueError: a predictive of another type, a score of the other kind, bad targets.
            ShapeError: targets or mask whose shape does not match the predictive.
            DataError: too few calibration points for ``alpha`` (overall, or in a class with
                ``by_class``); the message says how many are needed.
        """
        self.score_ = self._resolve_score(predictive)
        m = check_mask(mask, predictive.batch_shape)
        m = None if m is None else m.cpu()
        if isinstance(predictive, CategoricalPredictive):
            y = self._class_targets(predictive, targets)
            u = self._uniform(predictive.batch_shape, 0, None)
            s = self._all_scores(predictive, u).gather(-1, y.unsqueeze(-1)).squeeze(-1)  # [T, Q]
            s_flat = s[m] if m is not None else s.reshape(-1)
            y_flat = y[m] if m is not None else y.reshape(-1)
            c = predictive.n_classes
            if self.by_class:
                qs, counts = [], []
                for k in range(c):
                    sk = s_flat[y_flat == k]
                    counts.append(sk.numel())
                    qs.append(conformal_quantile(sk, self.alpha, f"targets: class {k}"))
                self.qhat_ = torch.stack(qs)
                self.n_calibration_ = torch.tensor(counts)
            else:
                self.qhat_ = conformal_quantile(s_flat, self.alpha)
                self.n_calibration_ = int(s_flat.numel())
            self._n_classes, self._event_dim = c, None
        else:
            assert isinstance(predictive, GaussianPredictive)
            y = check_real_targets(predictive, targets).double().cpu()
            bounds, scale = regression_parts(predictive.detach(), self.score_, self.alpha)
            s = regression_scores(bounds.double().cpu(), scale.double().cpu(), y)  # [T, Q, Dy]
            s_flat = s[m] if m is not None else s.reshape(-1, s.shape[-1])  # [n, Dy]
            self.qhat_ = torch.stack([conformal_quantile(s_flat[:, d], self.alpha) for d in range(s_flat.shape[-1])])
            self.n_calibration_ = int(s_flat.shape[0])
            self._n_classes, self._event_dim = None, predictive.event_dim
        return self

    def predict(self, predictive: Predictive, generator: torch.Generator | None = None) -> torch.Tensor:
        """Prediction sets or intervals for the query points of test tasks.

        Args:
            predictive: the test predictive, ``[T, Q]`` batch, of the kind used in :meth:`fit`.
            generator: source of the uniform draws of randomized scores (default: one seeded with
                ``seed + 1``).

        Returns:
            Classification: bool ``[T, Q, C]``, True where the class is in the set.
            Regression: ``[T, Q, Dy, 2]`` interval ends (lower, upper) in the predictive's dtype.

        Raises:
            InvalidValueError: called before :meth:`fit`, or a predictive of the other kind.
            ShapeError: a different number of classes or output dims than at fit time.
        """
        if self.qhat_ is None or self.score_ is None:
            raise InvalidValueError("SplitConformal: call fit(predictive, targets) on calibration tasks before predict")
        if isinstance(predictive, CategoricalPredictive):
            if self._n_classes is None:
                raise InvalidValueError("predictive: fitted on a GaussianPredictive, got a CategoricalPredictive")
            if predictive.n_classes != self._n_classes:
                raise ShapeError(
                    f"predictive: expected {self._n_classes} classes as at fit time, got {predictive.n_classes} "
                    f"({predictive!r})"
                )
            u = self._uniform(predictive.batch_shape, 1, generator)
            s = self._all_scores(predictive, u)  # [T, Q, C]
            return (s <= self.qhat_).to(predictive.sample_log_probs.device)
        if isinstance(predictive, GaussianPredictive):
            if self._event_dim is None:
                raise InvalidValueError("predictive: fitted on a CategoricalPredictive, got a GaussianPredictive")
            if predictive.event_dim != self._event_dim:
                raise ShapeError(
                    f"predictive: expected Dy = {self._event_dim} output dims as at fit time, got {predictive.event_dim} "
                    f"({predictive!r})"
                )
            bounds, scale = regression_parts(predictive.detach(), self.score_, self.alpha)
            q = self.qhat_.to(dtype=bounds.dtype, device=bounds.device)
            return regression_interval(bounds, scale, q)
        raise InvalidValueError(f"predictive: expected a CategoricalPredictive or GaussianPredictive, got {type(predictive).__name__}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON description of the settings and, when fitted, the quantile(s)."""
        out: dict[str, Any] = {
            "name": "split_conformal",
            "alpha": self.alpha,
            "score": self.score_ or self.score,
            "by_class": self.by_class,
            "randomized": self.randomized,
        }
        if self.score_ == "raps":
            out.update(k_reg=self.k_reg, lam=self.lam)
        if self.qhat_ is not None:
            out["qhat"] = self.qhat_.tolist()
            n = self.n_calibration_
            out["n_calibration"] = n.tolist() if isinstance(n, torch.Tensor) else n
        return out

    def __repr__(self) -> str:
        state = "fitted" if self.qhat_ is not None else "not fitted"
        return f"SplitConformal(alpha={self.alpha:g}, score={self.score_ or self.score!r}, by_class={self.by_class}, {state})"
