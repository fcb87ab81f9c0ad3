"""The M-particle side of the gradient family: a posterior of M parameter sets per task.

:class:`ParticleLearner` is the shared base of BMAML (SVGD particles) and PLATIPUS (posterior
draws). It adds to :class:`~bayesmeta.inference.gradient_base.GradientLearner` the evaluation
of every particle of every task in one nested ``vmap`` (each particle normalizes a task's
queries with that task's support set, :mod:`bayesmeta.models.context`) and the uniform-mixture
predictive: ``N(f_m(x), noise^2)`` per particle for regression, the particles' softmax for
classification. MAML is the M = 1 point case of the same family.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from bayesmeta.exceptions import ShapeError
from bayesmeta.gaussian import gaussian_log_density
from bayesmeta.inference.gradient_base import AdaptedParams, GradientLearner, full_mask
from bayesmeta.inference.inner_loop import Params, chunked
from bayesmeta.models.context import context_mode, kept_context, query_forward
from bayesmeta.predictive import CategoricalPredictive, GaussianPredictive, Predictive
from bayesmeta.tasks.batch import SupportSet, TaskBatch

__all__ = ["ParticleLearner", "ParticlePosterior"]


def _log_mean_exp(comp: torch.Tensor) -> torch.Tensor:
    """``log mean_m exp(comp[:, m])`` over dim 1 of ``[T, M, Q]``; exactly ``comp[:, 0]`` for M = 1."""
    if comp.shape[1] == 1:
        return comp[:, 0]
    return torch.logsumexp(comp, 1) - math.log(comp.shape[1])

@dataclass
class ParticlePosterior(AdaptedParams):
    """An empirical posterior: M parameter sets per task (SVGD particles or posterior samples).

    Attributes:
        params: ``{name: [T, M, *shape]}``.
        n_way: C for classification, ``None`` for regression.
        support_x: ``[T, S, ...]`` support inputs, kept when the backbone normalizes queries with
            their task's support statistics (``context_mode == "support"``), else ``None``.
        support_mask: ``[T, S]`` bool or ``None``.
    """

    @property
    def n_particles(self) -> int:
        """M."""
        return next(iter(self.params.values())).shape[1]


class ParticleLearner(GradientLearner):
    """Shared machinery of the learners whose posterior is a set of M parameter sets per task.

    On :class:`~bayesmeta.inference.gradient_base.GradientLearner` (backbone, options, support
    loss, noise model), evaluates all particles of all tasks in one nested ``vmap`` and turns
    their outputs into a mixture predictive. Not a method on its own.
    """

    # ------------------------------------------------------------- backbone
    def _particle_outputs(
        self,
        params: Params,
        x: torch.Tensor,
        support_x: torch.Tensor | None = None,
        support_mask: torch.Tensor | None = None,
        query_mask: torch.Tensor | None = None,
        flat_m: int | None = None,
    ) -> torch.Tensor:
        """Outputs of every particle of every task: params ``[T, M, ...]``, x ``[T, Q, ...]`` -> ``[T, M, Q, out]``.

        With a context-normalized backbone each particle normalizes a task's queries with that
        task's support set (``support_x`` ``[T, S, ...]``, ``support_mask`` ``[T, S]``), or with
        the query set itself for the transductive ``norm="batch"``. ``flat_m``: the params are
        already flat, ``[T * M, ...]`` with M = ``flat_m`` (task t's particles at rows
        ``t * M ... t * M + M - 1``).
        """
        fb = self.forward_fn().batched  # type: ignore[attr-defined]
        if flat_m is None:
            t, m = next(iter(params.values())).shape[:2]
            # every particle of every task is one parameter set of the batched forward (M = 1: a
            # squeeze, the fewest nodes in the graph the meta-gradient goes back through)
            flat_params = {k: v.squeeze(1) if m == 1 else v.reshape(t * m, *v.shape[2:]) for k, v in params.items()}
        else:
            m, flat_params = flat_m, params
            t = next(iter(params.values())).shape[0] // m

        def flat(v: torch.Tensor) -> torch.Tensor:  # [T, ...] -> [T * M, ...], task t's rows repeated
            return v if m == 1 else v.unsqueeze(1).expand(t, m, *v.shape[1:]).reshape(t * m, *v.shape[1:])

        mode = context_mode(self.model)
        if mode is None:
            out = chunked(fb, self._particle_chunk(m), flat_params, flat(x))
            return out.unsqueeze(1) if m == 1 else out.reshape(t, m, *out.shape[1:])
        qm = full_mask(x, query_mask)
        if mode == "self" or support_x is None:
            support_x, support_mask = x, qm
        else:
            support_mask = full_mask(support_x, support_mask)

        def sets(p: Params, xq: torch.Tensor, xs: torch.Tensor, ms: torch.Tensor, mq: torch.Tensor) -> torch.Tensor:
            return query_forward(lambda inp, context_mask=None: fb(p, inp, context_mask), self.model, xq, xs, ms, 1, mq)

        out = chunked(sets, self._particle_chunk(m), flat_params, flat(x), flat(support_x), flat(support_mask), flat(qm))
        return out.unsqueeze(1) if m == 1 else out.reshape(t, m, *out.shape[1:])

    def _particle_chunk(self, m: int) -> int | None:
        """Parameter sets per chunk of the flattened ``[T * M]`` batch: ``chunk_size`` tasks' worth."""
        return None if self.chunk_size is None else self.chunk_size * m

    def _posterior(self, params: Params, support: SupportSet) -> ParticlePosterior:
        return ParticlePosterior(params, support.n_way, *kept_context(self.model, support.x, support.mask))

    # ----------------------------------------------------------- predictive
    def _mixture_nll(
        self, out: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None, is_cls: bool, detach_outputs: bool = False
    ) -> torch.Tensor:
        """Mean NLL of the particle mixture over present query points (per output dim, regression).

        Args:
            out: ``[T, M, Q, out]`` particle outputs.
            y: ``[T, Q]`` labels or ``[T, Q, Dy]`` targets.
            mask: ``[T, Q]`` bool, or ``None`` (no padded query point).
            is_cls: classification.
            detach_outputs: cut the outputs from the graph (fits only the noise).
        """
        if detach_outputs:
            out = out.detach()
        if is_cls:
            lp = torch.log_softmax(out, -1)  # [T, M, Q, C]
            comp = lp.gather(-1, y.unsqueeze(1).expand(*lp.shape[:3]).unsqueeze(-1)).squeeze(-1)  # [T, M, Q]
            per_point = -_log_mean_exp(comp)
        else:
            var = torch.as_tensor(self.noise_variance(), dtype=out.dtype, device=out.device)
            comp = gaussian_log_density(y.unsqueeze(1), out, var).sum(-1)  # [T, M, Q]
            # per output dimension, like MAML's squared error averaged over Dy
            per_point = -_log_mean_exp(comp) / out.shape[-1]
        if mask is None:
            return per_point.mean()
        w = mask.to(per_point.dtype)
        return (per_point * w).sum() / w.sum()

    def _query_metrics(self, out: torch.Tensor, batch: TaskBatch, nll: float | None = None) -> dict[str, float]:
        """Detached diagnostics of the mixture on the query set (``mse``/``accuracy``, ``nll``).

        ``nll``: the mixture NLL when the caller has computed it already (it is the loss).
        """
        with torch.no_grad():
            mask = full_mask(batch.query_x, batch.query_mask)
            w = mask.to(out.dtype)
            if nll is None:
                nll = float(self._mixture_nll(out, batch.query_y, mask, batch.is_classification))
            if batch.is_classification:
                probs = torch.softmax(out, -1).mean(1)  # [T, Q, C]
                acc = ((probs.argmax(-1) == batch.query_y).to(out.dtype) * w).sum() / w.sum()
                return {"accuracy": float(acc), "nll": nll}
            se = ((out.mean(1) - batch.query_y) ** 2).mean(-1)
            return {"mse": float((se * w).sum() / w.sum()), "nll": nll}

    def predict(self, posterior: ParticlePosterior, query_x: torch.Tensor) -> Predictive:
        """Mixture predictive over the M particles at ``query_x`` ``[T, Q, ...]``.

        Returns:
            :class:`GaussianPredictive` with means ``[M, T, Q, Dy]`` and the noise variance, or
            :class:`CategoricalPredictive` with logits ``[M, T, Q, C]``.
        """
        if not isinstance(posterior, ParticlePosterior):
            raise ShapeError(f"posterior: expected a ParticlePosterior, got {type(posterior).__name__}")
        self.check_query_x(posterior, query_x)
        out = self._particle_outputs(
            posterior.params, query_x, posterior.support_x, posterior.support_mask
        ).movedim(1, 0)  # [M, T, Q, out]
        if posterior.n_way is not None:
            return CategoricalPredictive(logits=out)
        var = torch.as_tensor(self.noise_variance(), dtype=out.dtype, device=out.device)
        return GaussianPredictive(out, var.expand_as(out))
