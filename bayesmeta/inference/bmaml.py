"""Bayesian MAML (Yoon et al. 2018): M particles per task, moved by SVGD on the support set.

q(phi_t | support) is an empirical distribution over M particles. They start from the learned
prior p(phi | theta) (:class:`~bayesmeta.priors.DiagonalGaussianPrior`, one draw per task and
particle) or from a learned particle set shared by all tasks (``prior=None``), and take K SVGD
steps (:mod:`~bayesmeta.inference.svgd`) inside one ``vmap`` over tasks of a ``vmap`` over
particles. The predictive is the uniform mixture over particles: ``N(f_m(x), noise^2)`` per
particle for regression, the particles' softmax for classification.

Units of the inner loop. MAML steps on the *mean* squared error, BMAML on a log posterior. The
two meet when the log posterior is divided by ``tau_t = 2 noise^2 / (S_t Dy)`` (regression; S_t
the task's present support points) or ``1 / S_t`` (classification):

    l_t(phi) = tau_t log p(phi | support_t, theta) = -L_t(phi) + tau_t log p(phi | theta) + const,

with ``L_t`` MAML's support loss (mean squared error, or mean cross-entropy). SVGD runs on the
score ``grad l_t`` with repulsion weight ``tau_t`` (:func:`~bayesmeta.inference.svgd.svgd_direction`),
which is ``tau_t`` times the SVGD direction of the *untempered* posterior: the fixed point is the
exact posterior under the Gaussian likelihood, and ``inner_lr`` means what it means in MAML. The
noise inside ``tau_t`` is detached: the inner loop treats it as a constant, so it is fitted only
by the query likelihood (as in MAML). The prior's score ``-(phi - mu) / sigma^2`` is added in
closed form rather than differentiated inside ``grad``. Explicit Euler steps on it are stable
only while ``inner_lr * tau_t / sigma^2 < 2``: a prior much narrower than the steps it must
take (``prior_init_std``) makes the particles oscillate around its mean.

Step normalization (``normalize=True``, the default; a deviation from the paper). With the
median-heuristic bandwidth, ``sum_j k(phi_j, phi_i)`` is about 2 whatever M, so plain SVGD
moves each particle about M / 2 times less than a MAML step with the same ``inner_lr``, and one
or a few inner steps barely move the particles. Dividing each particle's Stein direction by its
kernel row sum instead of M keeps the SVGD fixed points (a positive factor per particle) and
makes a particle far from the others move exactly like a MAML network. ``normalize=False`` is
the paper's update. For M = 1 both are the same.

Meta-objectives (``objective``):

- ``"chaser"`` (the paper's): the follower is the particle set after K steps on the support set,
  the leader continues from it for ``leader_steps`` more steps on support + query; the loss is
  ``sum_m |phi_m^follower - stopgrad(phi_m^leader)|^2`` averaged over tasks. A learned noise is
  fitted alongside by maximum likelihood on the query set with the particles' outputs detached.
- ``"nll"``: the mixture predictive's negative log-likelihood of the query targets, per point
  and output dimension (for regression; per point for classification).

MAML is the special case ``n_particles=1, prior=None, objective="nll"`` with a fixed
``noise=sqrt(0.5)``: with one particle the kernel is ``[[1]]`` and has no gradient, so an SVGD
step is ``phi - inner_lr grad L_t(phi)``, the particle starts at the backbone's parameters, and
``-log N(y; f, 1/2) = (y - f)^2 + const`` is MAML's query loss. The tests check the meta-gradient.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from bayesmeta._validation import check_positive_int
from bayesmeta.exceptions import ConfigError, ShapeError
from bayesmeta.inference.base import StepOutput, TaskKind
from bayesmeta.inference.gradient_base import (
    Noise,
    check_finite_params,
    option_float,
    option_int,
)
from bayesmeta.inference.inner_loop import Params, as_batched, stacked_gradient_steps, with_batched
from bayesmeta.inference.particles import ParticleLearner, ParticlePosterior
from bayesmeta.inference.svgd import batched_svgd_steps
from bayesmeta.inference.task_noise import task_keys, task_seeds
from bayesmeta.priors import DiagonalGaussianPrior
from bayesmeta.tasks.batch import SupportSet, TaskBatch

# ParticlePosterior is re-exported: it was defined here before the gradient family had one base
__all__ = ["BMAML", "ParticlePosterior"]


def _reinitialised_copies(model: nn.Module, n: int) -> Params:
    """``n`` fresh initialisations of ``model`` (its modules' ``reset_parameters``), ``{name: [n, *shape]}``.

    Modules without ``reset_parameters`` keep their current values in every copy.
    """
    draws: list[dict[str, torch.Tensor]] = []
    for _ in range(n):
        m = copy.deepcopy(model)
        for mod in m.modules():
            reset = getattr(mod, "reset_parameters", None)
            if callable(reset):
                reset()
        draws.append({k: v.detach() for k, v in m.named_parameters()})
    return {k: torch.stack([d[k] for d in draws]) for k in draws[0]}


class BMAML(ParticleLearner):
    """Bayesian MAML: SVGD particles per task, meta-trained by the chaser loss or the mixture NLL.

    Args:
        model: the backbone; its parameters are the prior mean (``prior="learned"``) or the first
            particle of the learned particle set (``prior=None``).
        n_particles: M >= 1.
        inner_lr: SVGD step size, in MAML's units (see the module docstring).
        inner_steps: K, SVGD steps on the support set during meta-training.
        leader_steps: extra SVGD steps of the chaser's leader on support + query, >= 1.
        objective: ``"chaser"`` or ``"nll"``.
        bandwidth: RBF bandwidth h > 0, or ``None`` for the (detached) median heuristic.
        normalize: divide each particle's Stein direction by its kernel row sum instead of M
            (:func:`~bayesmeta.inference.svgd.svgd_direction`): same fixed points, but a
            particle moves as fast as a MAML network with the same ``inner_lr`` (plain SVGD is
            about M / 2 times slower). ``False`` is the paper's plain SVGD.
        prior: ``None`` (the default and the paper's choice: a learned particle set, ``model``'s
            parameters plus ``n_particles - 1`` re-initialised copies; no prior term),
            ``"learned"`` (a :class:`DiagonalGaussianPrior` over ``model``, used to draw the
            initial particles and, times ``prior_weight``, as the prior term of the posterior), or
            a :class:`DiagonalGaussianPrior` built on this very ``model``. On sinusoids with one
            inner step the learned prior did worse than the particle set (docs/bayesian_maml.md);
            on LinearGaussian tasks it recovers the true prior.
        prior_init_std: initial prior standard deviation when ``prior="learned"``; keep
            ``inner_lr * tau / prior_init_std^2 < 2`` (see the module docstring).
        prior_weight: w >= 0 multiplying the prior term (1: the posterior; 0: the prior only
            draws the initial particles).
        test_inner_steps: K used by :meth:`adapt`; defaults to ``inner_steps``.
        chunk_size: tasks per vmapped chunk (memory cap); ``None`` for all at once.
        task_kind: ``"classification"``, ``"regression"`` or ``None`` (either, by the batch).
        noise: regression observation noise std: ``"learned"`` or a fixed positive float.

    Shapes:
        ``adapt``: support ``[T, S, ...]`` -> :class:`ParticlePosterior` ``{name: [T, M, *shape]}``.
        ``predict``: query_x ``[T, Q, ...]`` -> mixture predictive with M members.

    Raises:
        ConfigError: an option out of range (M < 1, a non-positive bandwidth...).
        ShapeError: a prior whose parameter names/shapes do not match ``model``.
    """

    def __init__(
        self,
        model: nn.Module,
        n_particles: int = 5,
        inner_lr: float = 0.01,
        inner_steps: int = 1,
        leader_steps: int = 1,
        objective: Literal["chaser", "nll"] = "chaser",
        bandwidth: float | None = None,
        normalize: bool = True,
        prior: Literal["learned"] | DiagonalGaussianPrior | None = None,
        prior_init_std: float = 0.1,
        prior_weight: float = 1.0,
        test_inner_steps: int | None = None,
        chunk_size: int | None = None,
        task_kind: TaskKind | None = None,
        noise: Noise = "learned",
    ) -> None:
        super().__init__(model, inner_lr, inner_steps, test_inner_steps, chunk_size, task_kind, noise)
        self.prior_weight = option_float("prior_weight", prior_weight, allow_zero=True)
        self.n_particles = option_int("n_particles", n_particles, 1)
        self.leader_steps = option_int("leader_steps", leader_steps, 1)
        if objective not in ("chaser", "nll"):
            raise ConfigError(f"objective: expected 'chaser' or 'nll', got {objective!r}")
        self.objective = objective
        self.bandwidth = None if bandwidth is None else option_float("bandwidth", bandwidth)
        if not isinstance(normalize, bool):
            raise ConfigError(f"normalize: expected a bool, got {normalize!r}")
        self.normalize = normalize
        self.prior: DiagonalGaussianPrior | None = None
        self.extra_particles: nn.ParameterDict | None = None
        if prior == "learned":
            self.prior = DiagonalGaussianPrior(model, init_std=option_float("prior_init_std", prior_init_std))
        elif isinstance(prior, DiagonalGaussianPrior):
            prior.check_params(dict(model.named_parameters()), name="prior (the backbone's parameters)")
            if prior.model is not model:
                raise ConfigError(
                    "prior: a DiagonalGaussianPrior must be built on the learner's own backbone "
                    "(DiagonalGaussianPrior(model)), since its mean is that backbone's parameters"
                )
            self.prior = prior
        elif prior is None:
            if self.n_particles > 1:
                extra = _reinitialised_copies(model, self.n_particles - 1)
                self.extra_particles = nn.ParameterDict({k.replace(".", "__"): nn.Parameter(v) for k, v in extra.items()})
        else:
            raise ConfigError(f"prior: expected 'learned', a DiagonalGaussianPrior or None, got {prior!r}")

    # ------------------------------------------------------------ internals
    def initial_particles(
        self, n_tasks: int, generator: torch.Generator | None = None, seeds: Sequence[int] | None = None
    ) -> Params:
        """Starting particles of T tasks, ``{name: [T, M, *shape]}`` (on the autograd graph).

        Drawn from the prior (independently per task and particle, reparameterized) or the
        learned particle set broadcast over tasks. With ``seeds`` (one per task, see
        :mod:`bayesmeta.inference.task_noise`) task t's draws come from its own seed, so they do
        not depend on the other tasks; otherwise from ``generator`` (or torch's default).
        """
        t, m = check_positive_int("n_tasks", n_tasks), self.n_particles
        if self.prior is not None:
            if seeds is not None:
                if len(seeds) != t:
                    raise ShapeError(f"seeds: expected {t} seeds (one per task), got {len(seeds)}")
                dev = next(iter(self.prior.mean.values())).device
                per_task = [self.prior.sample(m, torch.Generator(device=dev).manual_seed(int(s))) for s in seeds]
                return {k: torch.stack([d[k] for d in per_task]) for k in per_task[0]}
            draws = self.prior.sample(t * m, generator)
            return {k: v.reshape(t, m, *v.shape[1:]) for k, v in draws.items()}
        params = self.backbone_params()
        out: Params = {}
        for k, p in params.items():
            if self.extra_particles is None:
                out[k] = p.expand(t, 1, *p.shape)  # one view op: every node is paid again in the backward
                continue
            stack = torch.cat([p.unsqueeze(0), self.extra_particles[k.replace(".", "__")]], 0)
            out[k] = stack.expand(t, *stack.shape)
        return out

    def _scale(self, x: torch.Tensor, mask: torch.Tensor | None, n_way: int | None, dy: int) -> torch.Tensor:
        """``tau_t`` of every task (``[T]``): the factor turning the log posterior into MAML's units.

        ``x``: the support inputs ``[T, S, ...]``; ``mask``: ``[T, S]`` bool, or ``None`` (all S present).
        """
        if mask is None:
            s = torch.full(x.shape[:1], float(x.shape[1]), dtype=self._dtype(), device=x.device)
        else:
            s = mask.sum(1).to(self._dtype())
        if n_way is not None:
            return 1.0 / s
        var = torch.as_tensor(self.noise_variance(), dtype=s.dtype, device=s.device).detach()
        return 2.0 * var / (s * dy)

    def _dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def _moves_by_descent(self) -> bool:
        """One particle and no prior score: an SVGD step is exactly a MAML step on the support loss.

        With M = 1 the kernel is ``[[1]]`` (no repulsion, no gradient) and without a prior term
        the score is ``-grad L_t``, so ``phi + lr * score = phi - lr * grad L_t``.
        """
        return self.n_particles == 1 and (self.prior is None or self.prior_weight == 0)

    def _descend(self, flat: Params, s: SupportSet, steps: int) -> Params:
        """``steps`` of MAML's inner loop from one parameter set per task, ``{name: [T, *shape]}``."""
        return stacked_gradient_steps(
            self.support_loss(s.n_way is not None), flat, s.x, s.y, s.mask, steps, self.inner_lr,
            chunk_size=self.chunk_size,
        )

    def _flat_start(self, n_tasks: int, seeds: Sequence[int] | None) -> Params:
        """The one starting particle of each task without the particle axis, ``{name: [T, *shape]}``."""
        if self.prior is None:  # the backbone's parameters, one expand each (as MAML's inner loop)
            return {k: p.expand(n_tasks, *p.shape) for k, p in self.backbone_params().items()}
        return {k: v.squeeze(1) for k, v in self.initial_particles(n_tasks, seeds=seeds).items()}

    def _svgd(self, particles: Params, s: SupportSet, steps: int) -> Params:
        is_cls = s.n_way is not None
        dy = 1 if is_cls else s.y.shape[-1]
        loss = self.support_loss(is_cls)
        prior = None
        if self.prior is not None and self.prior_weight > 0:
            # l_t = -L_t + tau_t w log p(phi | theta): the prior's score is added in closed form
            w = self.prior_weight
            mean, log_var = self.prior.mean, self.prior.log_variance
            if self.objective == "chaser":
                # the chaser compares two approximations of one target; letting it move the
                # target's prior lets it shrink the prior until neither moves (a trivial zero)
                mean = {k: v.detach() for k, v in mean.items()}
                log_var = {k: v.detach() for k, v in log_var.items()}
            prior = (mean, {k: w * torch.exp(-v) for k, v in log_var.items()})
        batched = as_batched(loss)
        log_target = with_batched(lambda p, x, y, m: -loss(p, x, y, m), lambda p, x, y, m: -batched(p, x, y, m))
        # the temperature weighs the repulsion and the prior: one particle without a prior needs none
        needs_scale = prior is not None or next(iter(particles.values())).shape[1] > 1
        return batched_svgd_steps(
            log_target, particles, s.x, s.y, s.mask, steps, self.inner_lr, bandwidth=self.bandwidth,
            temperature=self._scale(s.x, s.mask, s.n_way, dy) if needs_scale else 1.0, normalize=self.normalize,
            prior=prior, chunk_size=self.chunk_size,
        )

    # ------------------------------------------------------------ interface
    def meta_loss(self, batch: TaskBatch) -> StepOutput:
        """Chaser loss (or mixture NLL) after ``inner_steps`` SVGD steps, averaged over tasks.

        Args:
            batch: T tasks.

        Returns:
            ``loss`` and diagnostics (``chaser``, ``mse``/``accuracy``, ``nll``, ``noise_std``).

        Raises:
            NumericalError: the particles became NaN/Inf.
        """
        self.check_batch(batch)
        self.check_out_dim(batch.n_way)
        # per-task prior draws (task_noise): a task's particles do not depend on the rest of the meta-batch
        s = batch.support
        seeds = task_seeds(task_keys(s.x, s.y, s.mask)) if self.prior is not None else None
        if self._moves_by_descent():
            # M = 1 without a prior score: MAML's inner loop on [T, *shape] parameter sets, with
            # no particle axis to add and take away (each view op is paid again in the backward)
            move = self._descend
            follower = move(self._flat_start(batch.n_tasks, seeds), s, self.inner_steps)
            m = 1
        else:
            move = self._svgd
            follower = move(self.initial_particles(batch.n_tasks, seeds=seeds), s, self.inner_steps)
            m = None  # [T, M, *shape]
        out = self._particle_outputs(
            follower, batch.query_x, batch.support_x, batch.support_mask, batch.query_mask, flat_m=m
        )  # [T, M, Q, out]
        qmask = batch.query_mask  # None: no padded query, plain means
        leader: Params | None = None
        if self.objective == "nll":
            loss = self._mixture_nll(out, batch.query_y, qmask, batch.is_classification)
            metrics = self._query_metrics(out, batch, nll=float(loss.detach()))
        else:
            metrics = self._query_metrics(out, batch)
            with torch.no_grad():
                leader = move({k: v.detach() for k, v in follower.items()}, batch.joint(), self.leader_steps)
            # squared distance summed over particles and parameters, then averaged over tasks
            dist = sum(((follower[k] - leader[k]) ** 2).flatten(1).sum(1) for k in follower)
            loss = dist.mean()
            metrics["chaser"] = float(loss.detach())
            if self.fits_noise(batch):
                # maximum-likelihood noise on detached outputs: it cannot move the particles
                loss = loss + self._mixture_nll(out, batch.query_y, qmask, False, detach_outputs=True)
        if self.fits_noise(batch):
            metrics["noise_std"] = float(self.log_noise.detach().exp())
        metrics["loss"] = float(loss.detach())
        if not math.isfinite(metrics["loss"]):
            # off the hot path: non-finite particles make the loss non-finite, and only then
            # are the particles examined, to name the ones that diverged
            check_finite_params(follower, "SVGD on the support set")
            if leader is not None:
                check_finite_params(leader, "the chaser's leader")
        return StepOutput(loss, metrics)

    def adapt(
        self, support: SupportSet, steps: int | None = None, generator: torch.Generator | None = None
    ) -> ParticlePosterior:
        """Draw the initial particles and move them by ``test_inner_steps`` (or ``steps``) SVGD steps.

        Pure: the learner is read, never written. Prior draws are each task's own: seeded from one
        draw of ``generator`` (torch's default generator when it is ``None``) and the task's
        support set, so they do not depend on the other tasks in the call. The particles stay on
        the autograd graph; wrap in ``torch.no_grad()`` for evaluation.

        Raises:
            NumericalError: the particles became NaN/Inf.
        """
        self.check_batch(support, "support")
        self.check_out_dim(support.n_way)
        k = self.test_inner_steps if steps is None else check_positive_int("steps", steps, minimum=0)
        seeds = task_seeds(task_keys(support.x, support.y, support.mask), generator) if self.prior is not None else None
        particles = self._svgd(self.initial_particles(support.n_tasks, seeds=seeds), support, k)
        check_finite_params(particles, "SVGD on the support set")
        return self._posterior(particles, support)

    def extra_repr(self) -> str:
        prior = "learned" if self.prior is not None else "particle set"
        return (
            f"n_particles={self.n_particles}, inner_lr={self.inner_lr}, inner_steps={self.inner_steps}, "
            f"objective={self.objective!r}, prior={prior}, bandwidth={self.bandwidth}"
        )
