"""VERSA (Gordon et al., 2019): amortized Gaussian posterior over a task's linear head.

Model: a shared feature extractor ``f_theta`` (the backbone) and a task-specific linear head
``phi_t = (W_t, b_t)``; q(phi_t | support_t) is a diagonal Gaussian produced in one forward pass
by an amortization network (:mod:`bayesmeta.models.amortization`).

- Classification: the support features of class k are mean-pooled into ``c_k`` ``[D]`` and the
  network maps ``c_k`` alone to ``(mu_wk, logvar_wk, mu_bk, logvar_bk)``: classes are inferred
  independently, so any number of ways works.
- Regression: a Deep Sets encoder over ``(f(x_i), y_i)`` gives a Gaussian over ``W [D, Dy]`` and
  ``b [Dy]`` plus the task's observation noise.

Local reparameterization: with ``w ~ N(mu_w, diag s_w^2)`` the output ``a = f(x) . w + b`` is
Gaussian with mean ``f . mu_w + mu_b`` and variance ``(f^2) . s_w^2 + s_b^2``, so L samples of the
*outputs* are drawn directly per query point (cheaper and lower-variance than sampling weights).
The objective is VERSA's ``-log (1/L) sum_l p(y | a_l)`` averaged over the present query points,
and the predictive is the uniform mixture over the L output samples:
:class:`~bayesmeta.predictive.CategoricalPredictive` ``[L, T, Q, C]`` or
:class:`~bayesmeta.predictive.GaussianPredictive` ``[L, T, Q, Dy]`` (member variance = the task's
noise variance). With ``variance=False`` the head is a point estimate and M = 1.

Randomness: the L draws use ``torch.randn`` with the optional ``generator`` of ``predict`` (torch's
default generator otherwise), so seeding reproduces them.

Backbone: only ``backbone.features(x)`` (or ``backbone(x)`` when it has no ``features``) is used,
and ``backbone.feature_dim`` (or the ``feature_dim`` argument) gives D. A backbone built with a
head (``MLP``, ``Conv4(out_features=...)``) keeps that head's parameters, which then get no
gradient: build the backbone head-less where the class allows it.

Support and query inputs go through the backbone separately, like ProtoNets; a batch-norm backbone
therefore normalizes over each set, and padded (masked) support points enter its statistics —
use ``norm="group"``/``"none"`` when support sets are ragged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from bayesmeta._validation import check_positive_int, describe
from bayesmeta.exceptions import ConfigError, InvalidValueError, ShapeError
from bayesmeta.inference.base import MetaLearner, StepOutput, TaskPosterior
from bayesmeta.models._shapes import check_input_shape
from bayesmeta.models.amortization import (
    ClassAmortization,
    HeadGaussian,
    LinearHeadAmortization,
    PrototypeAmortization,
)
from bayesmeta.models.set_encoders import masked_class_mean
from bayesmeta.predictive import CategoricalPredictive, GaussianPredictive, Predictive
from bayesmeta.tasks.batch import SupportSet, TaskBatch

__all__ = ["VERSA", "VERSAPosterior"]


@dataclass
class VERSAPosterior(TaskPosterior):
    """q(head_t | support_t) for T tasks.

    Attributes:
        head: the Gaussian over each task's linear head (see
            :class:`~bayesmeta.models.amortization.HeadGaussian` for the layouts).
        class_features: ``[T, C, D]`` mean-pooled support features per class (classification),
            ``None`` for regression.
    """

    head: HeadGaussian
    class_features: torch.Tensor | None = None

    @property
    def n_tasks(self) -> int:
        return self.head.w_mean.shape[0]


class VERSA(MetaLearner):
    """VERSA: amortized variational inference over a linear head on shared features.

    Args:
        backbone: feature extractor; ``features(x)`` maps ``[N, *features] -> [N, D]``.
        n_samples: L, the number of output samples for the objective and the predictive.
        task_kind: ``"classification"`` or ``"regression"``.
        variance: infer a Gaussian (``True``) or a point estimate of the head (``False``, M = 1).
        amortization: ``"mlp"`` (VERSA's networks), ``"prototype"`` (fixed ``w = 2c``,
            ``b = -||c||^2``: ProtoNets; classification only, implies no variance) or a module
            with the interface of :class:`~bayesmeta.models.amortization.ClassAmortization` /
            :class:`~bayesmeta.models.amortization.LinearHeadAmortization`.
        hidden: width of the amortization networks (default: D for classification, 128 for
            regression).
        y_dim: Dy for regression.
        feature_dim: D when the backbone has no ``feature_dim`` attribute.
        min_noise_std: lower bound of the regression noise standard deviation.

    Shapes:
        ``adapt``: support ``[T, S, ...]`` -> head ``w [T, C, D]`` / ``[T, D, Dy]``.
        ``predict``: query_x ``[T, Q, ...]`` -> logits ``[L, T, Q, C]`` or mean/variance
        ``[L, T, Q, Dy]`` (L = 1 without variance).
    """

    config_keys: ClassVar[tuple[str, ...]] = (
        "n_samples",
        "task_kind",
        "variance",
        "amortization",
        "hidden",
        "y_dim",
        "min_noise_std",
    )

    def __init__(
        self,
        backbone: nn.Module,
        n_samples: int = 10,
        task_kind: Literal["classification", "regression"] = "classification",
        variance: bool = True,
        amortization: str | nn.Module = "mlp",
        hidden: int | None = None,
        y_dim: int = 1,
        feature_dim: int | None = None,
        min_noise_std: float = 0.01,
    ) -> None:
        if task_kind not in ("classification", "regression"):
            raise ConfigError(f"task_kind: expected 'classification' or 'regression', got {task_kind!r}")
        super().__init__(task_kind)
        if not isinstance(backbone, nn.Module):
            raise ConfigError(f"backbone: expected a torch.nn.Module, got {type(backbone).__name__}")
        self.backbone = backbone
        self.n_samples = check_positive_int("n_samples", n_samples)
        self.y_dim = check_positive_int("y_dim", y_dim)
        d = feature_dim if feature_dim is not None else getattr(backbone, "feature_dim", None)
        if d is None:
            raise ConfigError("feature_dim: the backbone has no feature_dim attribute; pass feature_dim")
        self.feature_dim = check_positive_int("feature_dim", int(d))
        amort: nn.Module
        if isinstance(amortization, nn.Module):
            amort = amortization
            variance = bool(getattr(amortization, "variance", variance))
        elif amortization == "mlp":
            if task_kind == "classification":
                amort = ClassAmortization(self.feature_dim, hidden, variance)
            else:
                amort = LinearHeadAmortization(
                    self.feature_dim, self.y_dim, 128 if hidden is None else hidden, variance, min_noise_std
                )
        elif amortization == "prototype":
            if task_kind != "classification":
                raise ConfigError("amortization: 'prototype' is a classification amortization")
            amort = PrototypeAmortization()
            variance = False
        else:
            raise ConfigError(
                f"amortization: expected 'mlp', 'prototype' or an nn.Module, got {amortization!r}"
            )
        self.amortization = amort
        self.variance = bool(variance)

    # ------------------------------------------------------------ internals
    def embed(self, x: torch.Tensor, name: str = "x") -> torch.Tensor:
        """Backbone features of ``[T, N, *features]`` inputs, ``[T, N, D]``.

        ``name`` (``support_x``, ``query_x``) is used in the error for an input the backbone's
        declared ``input_shape`` does not accept.
        """
        check_input_shape(self.backbone, x, name)
        flat = x.flatten(0, 1)
        f = self.backbone.features(flat) if hasattr(self.backbone, "features") else self.backbone(flat)
        if f.dim() != 2 or f.shape[-1] != self.feature_dim:
            raise ShapeError(
                f"backbone: expected features [N, {self.feature_dim}] (feature_dim), got {describe(f)}"
            )
        return f.reshape(*x.shape[:2], self.feature_dim)

    def output_moments(
        self, posterior: VERSAPosterior, query_x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Mean and variance of the head's outputs (the logits, for classification) at ``query_x``.

        Under q, ``a = f(x) . w + b`` is Gaussian per output: mean ``f . mu_w + mu_b`` and
        variance ``(f^2) . exp(logvar_w) + exp(logvar_b)`` (local reparameterization).

        Args:
            posterior: from :meth:`adapt`.
            query_x: ``[T, Q, *features]``.

        Returns:
            ``(mean, variance)``, each ``[T, Q, C]`` (classification) or ``[T, Q, Dy]``
            (regression); the variance is ``None`` for a point estimate.
        """
        self.check_query_x(posterior, query_x)
        return self._moments(posterior.head, self.embed(query_x, "query_x"))

    def _moments(self, head: HeadGaussian, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`output_moments` at features ``f`` ``[T, Q, D]``."""
        if self.task_kind == "classification":
            mean = torch.einsum("tqd,tcd->tqc", f, head.w_mean) + head.b_mean.unsqueeze(1)
            if head.w_logvar is None or head.b_logvar is None:
                return mean, None
            var = torch.einsum("tqd,tcd->tqc", f**2, head.w_logvar.exp()) + head.b_logvar.exp().unsqueeze(1)
        else:
            mean = torch.einsum("tqd,tdk->tqk", f, head.w_mean) + head.b_mean.unsqueeze(1)
            if head.w_logvar is None or head.b_logvar is None:
                return mean, None
            var = torch.einsum("tqd,tdk->tqk", f**2, head.w_logvar.exp()) + head.b_logvar.exp().unsqueeze(1)
        return mean, var

    # ------------------------------------------------------------ interface
    def adapt(self, support: SupportSet) -> VERSAPosterior:
        """Infer q(head_t | support_t) in one forward pass (pure).

        Raises:
            ShapeError: the support set is of the wrong kind or its y has the wrong Dy.
            InvalidValueError: an empty support set, or a class without a present support
                example (named in the message).
        """
        self.check_batch(support, "support")
        if support.x.shape[1] == 0:
            # SupportSet accepts S = 0; pooling an empty set would be NaN
            raise InvalidValueError(f"support_x: the support set is empty (S = 0 points), got {describe(support.x)}")
        f = self.embed(support.x, "support_x")  # [T, S, D]
        if self.task_kind == "classification":
            assert support.n_way is not None
            c, _ = masked_class_mean(f, support.y, support.n_way, support.mask)  # [T, C, D]
            return VERSAPosterior(self.amortization(c), c)
        if support.y.shape[-1] != self.y_dim:
            raise ShapeError(f"support_y: expected Dy = {self.y_dim} (y_dim), got {describe(support.y)}")
        return VERSAPosterior(self.amortization(f, support.y, support.mask))

    def predict(
        self,
        posterior: VERSAPosterior,
        query_x: torch.Tensor,
        *,
        n_samples: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Predictive:
        """Mixture over L locally reparameterized output samples.

        Args:
            posterior: from :meth:`adapt`.
            query_x: ``[T, Q, *features]``.
            n_samples: L for this call (default ``self.n_samples``).
            generator: source of the sampling noise.

        Returns:
            ``CategoricalPredictive`` over ``[L, T, Q, C]`` logits, or ``GaussianPredictive`` with
            ``[L, T, Q, Dy]`` means and variances (L = 1 for a point estimate).
        """
        self.check_query_x(posterior, query_x)
        out = self._sample_outputs(posterior, query_x, n_samples, generator)
        if self.task_kind == "classification":
            return CategoricalPredictive(logits=out)
        noise = posterior.head.noise_std
        assert noise is not None
        var = (noise**2).unsqueeze(1).unsqueeze(0).expand_as(out)  # [L, T, Q, Dy]
        return GaussianPredictive(out, var)

    def _sample_outputs(
        self,
        posterior: VERSAPosterior,
        query_x: torch.Tensor,
        n_samples: int | None,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """``[L, T, Q, C or Dy]`` output samples (the mean alone, L = 1, for a point estimate)."""
        mean, var = self._moments(posterior.head, self.embed(query_x, "query_x"))
        if var is None:
            return mean.unsqueeze(0)
        n = self.n_samples if n_samples is None else check_positive_int("n_samples", n_samples)
        eps = torch.randn((n, *mean.shape), generator=generator, dtype=mean.dtype, device=mean.device)
        return mean.unsqueeze(0) + var.sqrt().unsqueeze(0) * eps

    def meta_loss(self, batch: TaskBatch) -> StepOutput:
        """VERSA's objective ``-log (1/L) sum_l p(y_q | a_l)``, averaged over present query points."""
        self.check_batch(batch)
        posterior = self.adapt(batch.support)
        pred = self.predict(posterior, batch.query_x)
        y = batch.query_y
        if batch.query_mask is not None and batch.is_classification:
            # hidden query labels are not validated; give them a legal class before log_prob
            y = torch.where(batch.query_mask, y, torch.zeros_like(y))
        log_lik = pred.log_prob(y)  # [T, Q], already log-mean-exp over L
        if batch.query_mask is None:
            w = torch.ones_like(log_lik)
        else:
            w = batch.query_mask.to(log_lik.dtype)
            log_lik = torch.where(batch.query_mask, log_lik, torch.zeros_like(log_lik))
        loss = -(log_lik * w).sum() / w.sum()
        metrics = {"loss": float(loss.detach()), "nll": float(loss.detach())}
        with torch.no_grad():
            if isinstance(pred, CategoricalPredictive):
                hit = (pred.predicted == y).to(w.dtype)
                metrics["accuracy"] = float((hit * w).sum() / w.sum())
            else:
                assert isinstance(pred, GaussianPredictive)
                se = ((pred.mean - y) ** 2).mean(-1)
                metrics["mse"] = float((se * w).sum() / w.sum())
        return StepOutput(loss, metrics)
