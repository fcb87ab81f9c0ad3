"""PLATIPUS (Finn, Xu & Levine 2018): probabilistic MAML with a learned Gaussian prior.

Meta-parameters: the prior ``p(theta) = N(mu_theta, sigma_theta^2)`` over the backbone's
parameters (a :class:`~bayesmeta.priors.DiagonalGaussianPrior` whose mean is the backbone),
per-entry step sizes ``gamma_p`` and ``gamma_q``, the variational variance ``v_q`` and the
inner step size ``alpha`` (``inner_lr``, fixed).

Meta-training (the paper's Algorithm 1), for every task at once:

1. ``mu_q = mu_theta - gamma_q grad L(mu_theta, support + query)`` and
   ``q(theta | support, query) = N(mu_q, v_q)``;
2. ``mu_p = mu_theta - gamma_p grad L(mu_theta, support)`` and the support-conditioned prior
   ``p(theta | support) = N(mu_p, sigma_theta^2)``;
3. ``theta ~ q`` (``train_samples`` reparameterized draws), then K gradient steps on the support
   set with ``alpha``: ``phi``;
4. loss = ``L(phi, query)`` (averaged over draws) + ``kl_weight * KL(q || p(theta | support))``
   (summed over parameter entries, averaged over tasks). A learned regression noise is fitted
   as in MAML, by maximum likelihood on detached query residuals of the draws' mixture.

Test time (Algorithm 2): ``mu_p`` as above, ``theta_m ~ N(mu_p, sigma_theta^2)`` for
``m = 1..n_samples``, K gradient steps on the support set from each, predictive = uniform
mixture over the M adapted networks. The losses ``L`` are MAML's (mean squared error, mean
cross-entropy) and every gradient step goes through
:mod:`~bayesmeta.inference.inner_loop` (all tasks and draws in one batch).

PLATIPUS is hard to train from scratch: :meth:`PLATIPUS.from_maml` starts from a trained MAML
(its network becomes ``mu_theta``, its step size ``alpha`` and the initial ``gamma``).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from bayesmeta._validation import check_positive_int
from bayesmeta.exceptions import ConfigError
from bayesmeta.inference.base import StepOutput, TaskKind
from bayesmeta.inference.gradient_base import (
    Noise,
    check_finite_params,
    full_mask,
    option_float,
    option_int,
)
from bayesmeta.inference.inner_loop import Params, batched_gradient_steps, stacked_gradient_steps
from bayesmeta.inference.maml import MAML
from bayesmeta.inference.particles import ParticleLearner, ParticlePosterior
from bayesmeta.inference.task_noise import task_keys, task_randn, task_seeds
from bayesmeta.priors import DiagonalGaussianPrior
from bayesmeta.tasks.batch import SupportSet, TaskBatch

__all__ = ["PLATIPUS"]


def _key(name: str) -> str:
    return name.replace(".", "__")


class PLATIPUS(ParticleLearner):
    """Probabilistic latent model for incorporating priors and uncertainty in few-shot learning.

    Args:
        model: the backbone; its parameters are ``mu_theta``.
        inner_lr: alpha, the step size of the K gradient steps from a sampled theta.
        inner_steps: K during meta-training.
        n_samples: M, networks drawn by :meth:`adapt` (the mixture size of the predictive).
        kl_weight: weight of ``KL(q || p(theta | support))``, >= 0.
        train_samples: draws of theta ~ q per task during meta-training.
        prior_init_std: initial ``sigma_theta``.
        q_init_std: initial ``sqrt(v_q)``; defaults to ``prior_init_std``.
        gamma_init: initial ``gamma_p`` and ``gamma_q``; defaults to ``inner_lr``.
        test_inner_steps: K used by :meth:`adapt`; defaults to ``inner_steps``.
        chunk_size: tasks per vmapped chunk (memory cap); ``None`` for all at once.
        task_kind: ``"classification"``, ``"regression"`` or ``None`` (either, by the batch).
        noise: regression observation noise std: ``"learned"`` or a fixed positive float.

    Shapes:
        ``adapt``: support ``[T, S, ...]`` -> :class:`ParticlePosterior` ``{name: [T, M, *shape]}``.
        ``predict``: query_x ``[T, Q, ...]`` -> mixture predictive with M members.
    """

    def __init__(
        self,
        model: nn.Module,
        inner_lr: float = 0.01,
        inner_steps: int = 1,
        n_samples: int = 5,
        kl_weight: float = 1e-3,
        train_samples: int = 1,
        prior_init_std: float = 0.01,
        q_init_std: float | None = None,
        gamma_init: float | None = None,
        test_inner_steps: int | None = None,
        chunk_size: int | None = None,
        task_kind: TaskKind | None = None,
        noise: Noise = "learned",
    ) -> None:
        super().__init__(model, inner_lr, inner_steps, test_inner_steps, chunk_size, task_kind, noise)
        self.n_samples = option_int("n_samples", n_samples, 1)
        self.train_samples = option_int("train_samples", train_samples, 1)
        self.kl_weight = option_float("kl_weight", kl_weight, allow_zero=True)
        self.prior = DiagonalGaussianPrior(model, init_std=option_float("prior_init_std", prior_init_std))
        q_std = self.prior.init_std if q_init_std is None else option_float("q_init_std", q_init_std)
        gamma = self.inner_lr if gamma_init is None else option_float("gamma_init", gamma_init)
        named = dict(model.named_parameters())
        self.q_log_var = nn.ParameterDict(
            {_key(n): nn.Parameter(torch.full_like(p.detach(), 2.0 * math.log(q_std))) for n, p in named.items()}
        )
        self.gamma_p = nn.ParameterDict({_key(n): nn.Parameter(torch.full_like(p.detach(), gamma)) for n, p in named.items()})
        self.gamma_q = nn.ParameterDict({_key(n): nn.Parameter(torch.full_like(p.detach(), gamma)) for n, p in named.items()})

    @classmethod
    def from_maml(cls, maml: MAML, **kwargs: object) -> PLATIPUS:
        """A PLATIPUS initialised from a (trained) MAML.

        The MAML's backbone is deep-copied (training the PLATIPUS leaves the MAML untouched) and
        becomes ``mu_theta``; ``inner_lr``, ``inner_steps``, ``test_inner_steps``, ``chunk_size``,
        ``task_kind`` and the noise are taken from the MAML unless given in ``kwargs``, and a
        learned noise starts at the MAML's value. Meta-SGD step sizes are not carried over.

        Args:
            maml: the source learner (any ``adapt`` mode; PLATIPUS adapts every parameter).
            **kwargs: other :class:`PLATIPUS` options.

        Raises:
            ConfigError: ``maml`` is not a :class:`MAML`, or an unknown option.
        """
        if not isinstance(maml, MAML):
            raise ConfigError(f"maml: expected a MAML learner, got {type(maml).__name__}")
        unknown = set(kwargs) - set(cls.config_keys) - {"task_kind"}
        if unknown:
            raise ConfigError(f"from_maml: unknown PLATIPUS options {sorted(unknown)}; known: {list(cls.config_keys)}")
        opts: dict[str, object] = {
            "inner_lr": maml.inner_lr,
            "inner_steps": maml.inner_steps,
            "test_inner_steps": maml.test_inner_steps,
            "chunk_size": maml.chunk_size,
            "task_kind": maml.task_kind,
            "noise": "learned" if maml.fixed_noise is None else maml.fixed_noise,
        }
        opts.update(kwargs)
        out = cls(copy.deepcopy(maml.model), **opts)  # type: ignore[arg-type]
        if out.log_noise is not None and maml.log_noise is not None:
            with torch.no_grad():
                out.log_noise.copy_(maml.log_noise.detach())
        return out

    # ------------------------------------------------------------ internals
    def _map(self, d: nn.ParameterDict) -> Params:
        return {n: d[_key(n)] for n in self.prior.names}

    def _step(self, s: SupportSet, lr: Params) -> Params:
        """One gradient step from ``mu_theta`` on every task's set with per-entry ``lr``: ``[T, *shape]``."""
        return batched_gradient_steps(
            self.support_loss(s.n_way is not None), self.prior.mean, s.x, s.y, s.mask, 1, lr,
            chunk_size=self.chunk_size,
        )

    def _inner(self, theta: Params, s: SupportSet, steps: int) -> Params:
        """K gradient steps from every draw of every task: theta ``[T, M, ...]`` -> phi ``[T, M, ...]``."""
        if steps == 0:
            return theta
        t, m = next(iter(theta.values())).shape[:2]

        def flat(v: torch.Tensor) -> torch.Tensor:  # [T, ...] -> [T * M, ...], task t's rows repeated
            return v.unsqueeze(1).expand(t, m, *v.shape[1:]).reshape(t * m, *v.shape[1:])

        # every draw of every task is one parameter set of the one batched inner loop
        phi = stacked_gradient_steps(
            self.support_loss(s.n_way is not None),
            {k: v.reshape(t * m, *v.shape[2:]) for k, v in theta.items()},
            flat(s.x), flat(s.y), None if s.mask is None else flat(s.mask), steps, self.inner_lr,
            chunk_size=self._particle_chunk(m),
        )
        return {k: v.reshape(t, m, *v.shape[1:]) for k, v in phi.items()}

    @staticmethod
    def _draw(mean: Params, log_var: Params, m: int, generator: torch.Generator | None) -> Params:
        """``m`` reparameterized draws per task from ``N(mean [T, ...], exp(log_var))``: ``[T, m, ...]``."""
        out: Params = {}
        for k, mu in mean.items():
            eps = torch.randn((mu.shape[0], m, *mu.shape[1:]), generator=generator, dtype=mu.dtype, device=mu.device)
            out[k] = mu.unsqueeze(1) + (0.5 * log_var[k]).exp() * eps
        return out

    @staticmethod
    def _draw_per_task(mean: Params, log_var: Params, m: int, seeds: tuple[int, ...]) -> Params:
        """:meth:`_draw` with task t's noise from ``seeds[t]`` alone: ``[T, m, ...]``."""
        names = list(mean)
        ref = mean[names[0]]
        eps = task_randn(seeds, [(m, *mean[k].shape[1:]) for k in names], ref.dtype, ref.device)
        return {k: mean[k].unsqueeze(1) + (0.5 * log_var[k]).exp() * e for k, e in zip(names, eps)}

    def kl_divergence(self, mu_q: Params, mu_p: Params) -> torch.Tensor:
        """``KL(N(mu_q, v_q) || N(mu_p, sigma_theta^2))`` summed over entries, per task: ``[T]``."""
        lv_q, lv_p = self._map(self.q_log_var), self.prior.log_variance
        total: torch.Tensor | None = None
        for k in mu_q:
            kl = 0.5 * (lv_p[k] - lv_q[k] + (lv_q[k].exp() + (mu_q[k] - mu_p[k]) ** 2) * torch.exp(-lv_p[k]) - 1.0)
            kl = kl.reshape(kl.shape[0], -1).sum(1)  # scalar parameters (TaskNorm alphas) are [T]
            total = kl if total is None else total + kl
        assert total is not None
        return total

    # ------------------------------------------------------------ interface
    def meta_loss(self, batch: TaskBatch) -> StepOutput:
        """Query loss of networks adapted from ``theta ~ q(theta | support, query)`` plus the KL.

        Returns:
            ``loss`` and diagnostics (``query_loss``, ``kl``, ``mse``/``accuracy``, ``nll``,
            ``noise_std``).

        Raises:
            NumericalError: the adapted parameters became NaN/Inf.
        """
        self.check_batch(batch)
        self.check_out_dim(batch.n_way)
        mu_p = self._step(batch.support, self._map(self.gamma_p))
        mu_q = self._step(batch.joint(), self._map(self.gamma_q))
        # per-task noise (task_noise): a task's draws do not depend on the rest of the meta-batch
        s = batch.support
        seeds = task_seeds(task_keys(s.x, s.y, s.mask))
        theta = self._draw_per_task(mu_q, self._map(self.q_log_var), self.train_samples, seeds)
        phi = self._inner(theta, batch.support, self.inner_steps)
        check_finite_params(phi, "the inner gradient steps")
        out = self._particle_outputs(
            phi, batch.query_x, batch.support_x, batch.support_mask, batch.query_mask
        )  # [T, M, Q, out]
        qmask = full_mask(batch.query_x, batch.query_mask)
        w = qmask.to(out.dtype)
        if batch.is_classification:
            lp = torch.log_softmax(out, -1)
            ce = -lp.gather(-1, batch.query_y.unsqueeze(1).expand(*lp.shape[:3]).unsqueeze(-1)).squeeze(-1)
            per_point = ce.mean(1)  # average over draws, [T, Q]
        else:
            per_point = ((out - batch.query_y.unsqueeze(1)) ** 2).mean(-1).mean(1)
        query_loss = (per_point * w).sum() / w.sum()
        kl = self.kl_divergence(mu_q, mu_p).mean()
        loss = query_loss + self.kl_weight * kl
        metrics = self._query_metrics(out, batch)
        metrics.update({"query_loss": float(query_loss.detach()), "kl": float(kl.detach())})
        if self.fits_noise(batch):
            loss = loss + self._mixture_nll(out, batch.query_y, qmask, False, detach_outputs=True)
            metrics["noise_std"] = float(self.log_noise.detach().exp())
        metrics["loss"] = float(loss.detach())
        return StepOutput(loss, metrics)

    def adapt(
        self, support: SupportSet, steps: int | None = None, generator: torch.Generator | None = None
    ) -> ParticlePosterior:
        """Two-step inference: a ``gamma_p`` step on ``mu_theta``, M draws, K steps from each.

        Pure: the learner is read, never written. The draws are each task's own: seeded from one
        draw of ``generator`` (torch's default generator when it is ``None``) and the task's
        support set, so they do not depend on the other tasks in the call. The result stays on
        the autograd graph.

        Raises:
            NumericalError: the adapted parameters became NaN/Inf.
        """
        self.check_batch(support, "support")
        self.check_out_dim(support.n_way)
        k = self.test_inner_steps if steps is None else check_positive_int("steps", steps, minimum=0)
        mu_p = self._step(support, self._map(self.gamma_p))
        seeds = task_seeds(task_keys(support.x, support.y, support.mask), generator)
        theta = self._draw_per_task(mu_p, self.prior.log_variance, self.n_samples, seeds)
        phi = self._inner(theta, support, k)
        check_finite_params(phi, "the inner gradient steps")
        return self._posterior(phi, support)

    def extra_repr(self) -> str:
        return (
            f"n_samples={self.n_samples}, inner_lr={self.inner_lr}, inner_steps={self.inner_steps}, "
            f"kl_weight={self.kl_weight}, train_samples={self.train_samples}"
        )
