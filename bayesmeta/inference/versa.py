"""VERSA (Gordon et al., 2019): amortized Gaussian posterior over a task's linear head.

Model: a shared feature extractor ``f_theta`` (the backbone) and a task-specific linear head
``phi_t = (W_t, b_t)``; q(phi_t | support_t) is a diagonal Gaussian produced in one forward pass
by an amortization network (:mod:`bayesmeta.models.amortization`).

- Classification: the support features of class k are mean-pooled into ``c_k`` ``[D]`` and the
  network maps ``c_k`` alone to ``(mu_wk, logvar_wk, mu_bk, logvar_bk)``: classes are inferred
  independently, so any number of ways works.
- Regression: a Deep Sets encoder over ``(f(x_i), y_i)`` gives a Gaussian over ``W [D, Dy]`` and
  ``b [Dy]`` plus the task's observation noise.

Local reparameterization (meta-training): with ``w ~ N(mu_w, diag s_w^2)`` the output
``a = f(x) . w + b`` is Gaussian with mean ``f . mu_w + mu_b`` and variance
``(f^2) . s_w^2 + s_b^2``, so L samples of the *outputs* are drawn directly per query point
(lower-variance gradients than sampling weights). The objective is VERSA's
``-log (1/L) sum_l p(y | a_l)`` averaged over the present query points.

Prediction draws L *heads* per task, ``w_l ~ q(w | support)``, and returns the uniform mixture
over them: :class:`~bayesmeta.predictive.CategoricalPredictive` ``[L, T, Q, C]`` or
:class:`~bayesmeta.predictive.GaussianPredictive` ``[L, T, Q, Dy]`` (member variance = the task's
noise variance). Each query's predictive has the same distribution as with local
reparameterization (its outputs are the same Gaussian), but the draws belong to the task: they
come from a seed of the task's own (:mod:`bayesmeta.inference.task_noise`, drawn once per
``adapt`` from the optional ``generator``, or torch's default generator), so a query's
prediction does not depend on the other queries or tasks in the call. With ``variance=False``
the head is a point estimate and M = 1.

Backbone: only ``backbone.features(x)`` (or ``backbone(x)`` when it has no ``features``) is used,
and ``backbone.feature_dim`` (or the ``feature_dim`` argument) gives D. A backbone built with a
head (``MLP``, ``Conv4(out_features=...)``) keeps that head's parameters, which then get no
gradient: build the backbone head-less where the class allows it.

The backbone is called through :mod:`bayesmeta.models.context`: with a context-normalized
backbone (``Conv4(norm="task")``) queries are normalized with their task's present support
points only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from bayesmeta._validation import check_positive_int, describe, option_int
from bayesmeta.exceptions import ConfigError, InvalidValueError, ShapeError
from bayesmeta.inference.base import MetaLearner, StepOutput, TaskPosterior
from bayesmeta.inference.task_noise import task_keys, task_randn, task_seeds
from bayesmeta.masked import masked_mean
from bayesmeta.models._shapes import check_input_shape
from bayesmeta.models.amortization import (
    ClassAmortization,
    HeadGaussian,
    LinearHeadAmortization,
    PrototypeAmortization,
    PrototypeResidualAmortization,
)
from bayesmeta.models.context import (
    context_mode,
    joint_forward,
    kept_context,
    query_forward,
    support_forward,
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
        seeds: one noise seed per task for the predictive draws (``None`` for a point estimate).
        support_x: ``[T, S, ...]`` support inputs, kept for a support-normalized backbone.
        support_mask: ``[T, S]`` bool or ``None``.
    """

    head: HeadGaussian
    class_features: torch.Tensor | None = None
    seeds: tuple[int, ...] | None = None
    support_x: torch.Tensor | None = None
    support_mask: torch.Tensor | None = None

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
            ``b = -||c||^2``: ProtoNets; classification only, implies no variance),
            ``"prototype_residual"`` (VERSA's networks as a correction to that head, starting at
            it, with a learned variance:
            :class:`~bayesmeta.models.amortization.PrototypeResidualAmortization`;
            classification only) or a module
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
        self.n_samples = option_int("n_samples", n_samples, 1)
        self.y_dim = option_int("y_dim", y_dim, 1)
        d = feature_dim if feature_dim is not None else getattr(backbone, "feature_dim", None)
        if d is None:
            raise ConfigError("feature_dim: the backbone has no feature_dim attribute; pass feature_dim")
        self.feature_dim = option_int("feature_dim", int(d), 1)
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
        elif amortization == "prototype_residual":
            if task_kind != "classification":
                raise ConfigError("amortization: 'prototype_residual' is a classification amortization")
            amort = PrototypeResidualAmortization(self.feature_dim, hidden, variance)
        else:
            raise ConfigError(
                "amortization: expected 'mlp', 'prototype', 'prototype_residual' or an nn.Module, "
                f"got {amortization!r}"
            )
        self.amortization = amort
        self.variance = bool(variance)

    # ------------------------------------------------------------ internals
    def _features_fn(self, x: torch.Tensor, context_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Backbone features of ``[T, N, *features]`` inputs, ``[T, N, D]``."""
        fn = self.backbone.features if hasattr(self.backbone, "features") else self.backbone
        if context_mode(self.backbone) is not None:
            f = fn(x, context_mask=context_mask)
        else:
            f = fn(x.flatten(0, 1))  # per-example backbones may only accept one batch dim
            if f.dim() != 2 or f.shape[-1] != self.feature_dim:
                raise ShapeError(
                    f"backbone: expected features [N, {self.feature_dim}] (feature_dim), got {describe(f)}"
                )
            f = f.reshape(*x.shape[:2], self.feature_dim)
        if f.shape != (*x.shape[:2], self.feature_dim):
            raise ShapeError(
                f"backbone: expected features {[*x.shape[:2], self.feature_dim]} (feature_dim), got {describe(f)}"
            )
        return f

    def embed(self, x: torch.Tensor, name: str = "x") -> torch.Tensor:
        """Backbone features of ``[T, N, *features]`` inputs, ``[T, N, D]``, each set its own context.

        ``name`` (``support_x``, ``query_x``) is used in the error for an input the backbone's
        declared ``input_shape`` does not accept. :meth:`adapt` / :meth:`predict` normalize queries
        with their task's support set instead.
        """
        check_input_shape(self.backbone, x, name)
        return support_forward(self._features_fn, self.backbone, x, None, set_dim=1)

    def _query_features(self, posterior: VERSAPosterior, query_x: torch.Tensor) -> torch.Tensor:
        check_input_shape(self.backbone, query_x, "query_x")
        return query_forward(
            self._features_fn, self.backbone, query_x, posterior.support_x, posterior.support_mask, set_dim=1
        )

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
        return self._moments(posterior.head, self._query_features(posterior, query_x))

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
    def adapt(self, support: SupportSet, generator: torch.Generator | None = None) -> VERSAPosterior:
        """Infer q(head_t | support_t) in one forward pass (pure).

        Args:
            support: T support sets.
            generator: source of the one draw that seeds every task's predictive noise (torch's
                default generator if ``None``); a task's draws depend on that draw and on its own
                support set only.

        Raises:
            ShapeError: the support set is of the wrong kind or its y has the wrong Dy.
            InvalidValueError: an empty support set, or a class without a present support
                example (named in the message).
        """
        self.check_batch(support, "support")
        if support.x.shape[1] == 0:
            # SupportSet accepts S = 0; pooling an empty set would be NaN
            raise InvalidValueError(f"support_x: the support set is empty (S = 0 points), got {describe(support.x)}")
        check_input_shape(self.backbone, support.x, "support_x")
        f = support_forward(self._features_fn, self.backbone, support.x, support.mask, set_dim=1)  # [T, S, D]
        seeds = task_seeds(task_keys(support.x, support.y, support.mask), generator) if self.variance else None
        return self._posterior(support, f, seeds)

    def _posterior(self, support: SupportSet, f: torch.Tensor, seeds: tuple[int, ...] | None) -> VERSAPosterior:
        """The posterior from support features ``f`` ``[T, S, D]``."""
        ctx = kept_context(self.backbone, support.x, support.mask)
        if self.task_kind == "classification":
            assert support.n_way is not None
            c, _ = masked_class_mean(f, support.y, support.n_way, support.mask)  # [T, C, D]
            return VERSAPosterior(self.amortization(c), c, seeds, *ctx)
        if support.y.shape[-1] != self.y_dim:
            raise ShapeError(f"support_y: expected Dy = {self.y_dim} (y_dim), got {describe(support.y)}")
        return VERSAPosterior(self.amortization(f, support.y, support.mask), None, seeds, *ctx)

    def predict(self, posterior: VERSAPosterior, query_x: torch.Tensor, *, n_samples: int | None = None) -> Predictive:
        """Mixture over L heads drawn from each task's q (the task's own seeded draws).

        Args:
            posterior: from :meth:`adapt`.
            query_x: ``[T, Q, *features]``.
            n_samples: L for this call (default ``self.n_samples``).

        Returns:
            ``CategoricalPredictive`` over ``[L, T, Q, C]`` logits, or ``GaussianPredictive`` with
            ``[L, T, Q, Dy]`` means and variances (L = 1 for a point estimate).
        """
        self.check_query_x(posterior, query_x)
        f = self._query_features(posterior, query_x)  # [T, Q, D]
        out = self._head_samples(posterior, f, n_samples)
        return self._predictive(posterior, out)

    def _predictive(self, posterior: VERSAPosterior, out: torch.Tensor) -> Predictive:
        """Mixture predictive from output samples ``[L, T, Q, C or Dy]``."""
        if self.task_kind == "classification":
            return CategoricalPredictive(logits=out)
        noise = posterior.head.noise_std
        assert noise is not None
        var = (noise**2).unsqueeze(1).unsqueeze(0).expand_as(out)  # [L, T, Q, Dy]
        return GaussianPredictive(out, var)

    def _head_samples(self, posterior: VERSAPosterior, f: torch.Tensor, n_samples: int | None) -> torch.Tensor:
        """``[L, T, Q, out]`` outputs of L heads per task drawn with the task's seed (L = 1 without variance)."""
        head = posterior.head
        if head.w_logvar is None or head.b_logvar is None or posterior.seeds is None:
            mean, _ = self._moments(head, f)
            return mean.unsqueeze(0)
        n = self.n_samples if n_samples is None else check_positive_int("n_samples", n_samples)
        ew, eb = task_randn(
            posterior.seeds, [(n, *head.w_mean.shape[1:]), (n, *head.b_mean.shape[1:])], f.dtype, f.device
        )  # [T, L, ...]
        w = head.w_mean.unsqueeze(1) + (0.5 * head.w_logvar).exp().unsqueeze(1) * ew
        b = head.b_mean.unsqueeze(1) + (0.5 * head.b_logvar).exp().unsqueeze(1) * eb
        if self.task_kind == "classification":
            out = torch.einsum("tqd,tlcd->ltqc", f, w)
        else:
            out = torch.einsum("tqd,tldk->ltqk", f, w)
        return out + b.movedim(1, 0).unsqueeze(2)

    def _local_reparam_samples(
        self, head: HeadGaussian, f: torch.Tensor, seeds: tuple[int, ...] | None = None
    ) -> torch.Tensor:
        """``[L, T, Q, out]`` locally reparameterized output samples (meta-training).

        With ``seeds`` (one per task) task t's noise comes from its own seed, so a task's draws do
        not depend on the other tasks of the meta-batch (nor on how a multi-process run splits
        it); otherwise from torch's RNG.
        """
        mean, var = self._moments(head, f)
        if var is None:
            return mean.unsqueeze(0)
        if seeds is not None:
            (eps,) = task_randn(seeds, [(self.n_samples, *mean.shape[1:])], mean.dtype, mean.device)  # [T, L, Q, out]
            eps = eps.movedim(1, 0)
        else:
            eps = torch.randn((self.n_samples, *mean.shape), dtype=mean.dtype, device=mean.device)
        return mean.unsqueeze(0) + var.sqrt().unsqueeze(0) * eps

    def meta_loss(self, batch: TaskBatch) -> StepOutput:
        """VERSA's objective ``-log (1/L) sum_l p(y_q | a_l)``, averaged over present query points."""
        self.check_batch(batch)
        if batch.support_x.shape[1] == 0:
            raise InvalidValueError(f"support_x: the support set is empty (S = 0 points), got {describe(batch.support_x)}")
        check_input_shape(self.backbone, batch.support_x, "support_x")
        check_input_shape(self.backbone, batch.query_x, "query_x")
        fs, fq = joint_forward(
            self._features_fn, self.backbone, batch.support_x, batch.support_mask, batch.query_x, 1, batch.query_mask
        )
        head = self._posterior(batch.support, fs, None).head
        # per-task noise (task_noise): a task's draws do not depend on the rest of the meta-batch
        s = batch.support
        seeds = task_seeds(task_keys(s.x, s.y, s.mask)) if self.variance else None
        pred = self._predictive(VERSAPosterior(head), self._local_reparam_samples(head, fq, seeds))
        y = batch.query_y
        if batch.query_mask is not None and batch.is_classification:
            # hidden query labels are not validated; give them a legal class before log_prob
            y = torch.where(batch.query_mask, y, torch.zeros_like(y))
        log_lik = pred.log_prob(y)  # [T, Q], already log-mean-exp over L
        loss = -masked_mean(log_lik, batch.query_mask)
        metrics = {"loss": float(loss.detach()), "nll": float(loss.detach())}
        with torch.no_grad():
            if isinstance(pred, CategoricalPredictive):
                hit = (pred.predicted == y).to(log_lik.dtype)
                metrics["accuracy"] = float(masked_mean(hit, batch.query_mask))
            else:
                assert isinstance(pred, GaussianPredictive)
                se = ((pred.mean - y) ** 2).mean(-1)
                metrics["mse"] = float(masked_mean(se, batch.query_mask))
        return StepOutput(loss, metrics)
