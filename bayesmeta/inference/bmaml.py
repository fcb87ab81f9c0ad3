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
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn
from torch.func import functional_call, vmap

from bayesmeta._validation import check_positive_int
from bayesmeta.exceptions import ConfigError, NumericalError, ShapeError
from bayesmeta.inference.base import MetaLearner, StepOutput, TaskKind, TaskPosterior
from bayesmeta.inference.inner_loop import Params, cross_entropy_loss, squared_error_loss
from bayesmeta.inference.svgd import batched_svgd_steps
from bayesmeta.inference.task_noise import task_keys, task_seeds
from bayesmeta.models.context import context_mode, query_forward
from bayesmeta.predictive import CategoricalPredictive, GaussianPredictive, Predictive
from bayesmeta.priors import DiagonalGaussianPrior
from bayesmeta.tasks.batch import SupportSet, TaskBatch

__all__ = ["BMAML", "ParticleLearner", "ParticlePosterior"]

_LOG_2PI = math.log(2.0 * math.pi)


@dataclass
class ParticlePosterior(TaskPosterior):
    """An empirical posterior: M parameter sets per task (SVGD particles or posterior samples).

    Attributes:
        params: ``{name: [T, M, *shape]}``.
        n_way: C for classification, ``None`` for regression.
        support_x: ``[T, S, ...]`` support inputs, kept when the backbone normalizes queries with
            their task's support statistics (``context_mode == "support"``), else ``None``.
        support_mask: ``[T, S]`` bool or ``None``.
    """

    params: Params
    n_way: int | None
    support_x: torch.Tensor | None = None
    support_mask: torch.Tensor | None = None

    @property
    def n_tasks(self) -> int:
        return next(iter(self.params.values())).shape[0]

    @property
    def n_particles(self) -> int:
        """M."""
        return next(iter(self.params.values())).shape[1]


def _option_int(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return value


def _option_float(name: str, value: float, allow_zero: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        want = "a finite float >= 0" if allow_zero else "a positive finite float"
        raise ConfigError(f"{name}: expected {want}, got {value!r}")
    return float(value)


def _support_mask(s: SupportSet) -> torch.Tensor:
    if s.mask is not None:
        return s.mask
    return torch.ones(s.x.shape[:2], dtype=torch.bool, device=s.x.device)


def _check_finite_params(params: Params, what: str) -> None:
    """Raise :class:`NumericalError` if any particle holds NaN/Inf (one sync, at the boundary)."""
    bad = [k for k, v in params.items() if not bool(torch.isfinite(v).all())]
    if bad:
        raise NumericalError(
            f"particles: {what} produced NaN/Inf in {bad}; the inner loop diverged or the "
            f"meta-parameters are not finite (lower inner_lr, or check the learner's parameters)"
        )


class ParticleLearner(MetaLearner):
    """Shared machinery of the learners whose posterior is a set of M parameter sets per task.

    Holds the backbone and the regression noise, evaluates all particles of all tasks in one
    nested ``vmap`` and turns their outputs into a mixture predictive. Not a method on its own.
    """

    def __init__(
        self,
        model: nn.Module,
        inner_lr: float,
        inner_steps: int,
        test_inner_steps: int | None,
        chunk_size: int | None,
        task_kind: TaskKind | None,
        noise: float | Literal["learned"],
    ) -> None:
        super().__init__(task_kind)
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        if not list(model.parameters()):
            raise ConfigError(f"model: {type(model).__name__} has no parameters to adapt")
        self.model = model
        self.inner_lr = _option_float("inner_lr", inner_lr)
        self.inner_steps = _option_int("inner_steps", inner_steps, 0)
        self.test_inner_steps = (
            self.inner_steps if test_inner_steps is None else _option_int("test_inner_steps", test_inner_steps, 0)
        )
        self.chunk_size = None if chunk_size is None else _option_int("chunk_size", chunk_size, 1)
        self.log_noise: nn.Parameter | None = None
        self.fixed_noise: float | None = None
        if noise == "learned":
            if task_kind != "classification":
                ref = next(model.parameters())
                # noise std 1 at the start, as MAML: too small a start makes early NLLs explode
                self.log_noise = nn.Parameter(torch.zeros((), dtype=ref.dtype, device=ref.device))
        elif isinstance(noise, (int, float)) and not isinstance(noise, bool) and noise > 0 and math.isfinite(noise):
            self.fixed_noise = float(noise)
        else:
            raise ConfigError(f"noise: expected 'learned' or a positive float, got {noise!r}")

    # ------------------------------------------------------------- backbone
    def _forward_fn(self):
        """``f(params, x, context_mask=None) -> outputs`` for one parameter set: ``[N, ...] -> [N, out]``."""
        buffers = dict(self.model.named_buffers())
        model = self.model

        def f(p: Params, inp: torch.Tensor, context_mask: torch.Tensor | None = None) -> torch.Tensor:
            kwargs = {} if context_mask is None else {"context_mask": context_mask}
            return functional_call(model, {**p, **buffers}, (inp,), kwargs)

        return f

    def _task_loss(self, is_cls: bool):
        """MAML's support loss ``L(params, x, y, mask)`` for one parameter set of one task."""
        f = self._forward_fn()
        # a context-normalized backbone takes its task statistics from the present support points
        in_context = context_mode(self.model) is not None

        def loss(p: Params, x: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
            out = f(p, x, m) if in_context else f(p, x)
            return cross_entropy_loss(out, y, m) if is_cls else squared_error_loss(out, y, m)

        return loss

    def _particle_outputs(
        self,
        params: Params,
        x: torch.Tensor,
        support_x: torch.Tensor | None = None,
        support_mask: torch.Tensor | None = None,
        query_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Outputs of every particle of every task: params ``[T, M, ...]``, x ``[T, Q, ...]`` -> ``[T, M, Q, out]``.

        With a context-normalized backbone each particle normalizes a task's queries with that
        task's support set (``support_x`` ``[T, S, ...]``, ``support_mask`` ``[T, S]``), or with
        the query set itself for the transductive ``norm="batch"``.
        """
        f = self._forward_fn()
        mode = context_mode(self.model)
        if mode is None:
            over_particles = vmap(f, in_dims=(0, None))
            return vmap(over_particles, in_dims=(0, 0), chunk_size=self.chunk_size)(params, x)
        qm = query_mask if query_mask is not None else torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        if mode == "self" or support_x is None:
            support_x, support_mask = x, qm
        elif support_mask is None:
            support_mask = torch.ones(support_x.shape[:2], dtype=torch.bool, device=support_x.device)

        def one(p: Params, xq: torch.Tensor, xs: torch.Tensor, ms: torch.Tensor, mq: torch.Tensor) -> torch.Tensor:
            return query_forward(lambda inp, context_mask=None: f(p, inp, context_mask), self.model, xq, xs, ms, 0, mq)

        over_particles = vmap(one, in_dims=(0, None, None, None, None))
        return vmap(over_particles, chunk_size=self.chunk_size)(params, x, support_x, support_mask, qm)

    def _posterior(self, params: Params, support: SupportSet) -> ParticlePosterior:
        keep = context_mode(self.model) == "support"
        return ParticlePosterior(params, support.n_way, support.x if keep else None, support.mask if keep else None)

    def _check_out_dim(self, n_way: int | None) -> None:
        out_features = getattr(self.model, "out_features", None)
        if out_features is not None and n_way is not None and out_features != n_way:
            raise ShapeError(
                f"n_way: the model's head has out_features = {out_features} logits, but the batch is {n_way}-way"
            )

    def noise_variance(self) -> torch.Tensor | float:
        """Regression observation-noise variance of every particle's predictive."""
        if self.fixed_noise is not None:
            return self.fixed_noise ** 2
        if self.log_noise is None:
            raise ConfigError(f"noise: this {type(self).__name__} was built for classification and has no regression noise")
        return torch.exp(2.0 * self.log_noise)

    # ----------------------------------------------------------- predictive
    def _mixture_nll(
        self, out: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, is_cls: bool, detach_outputs: bool = False
    ) -> torch.Tensor:
        """Mean NLL of the particle mixture over present query points (per output dim, regression).

        Args:
            out: ``[T, M, Q, out]`` particle outputs.
            y: ``[T, Q]`` labels or ``[T, Q, Dy]`` targets.
            mask: ``[T, Q]`` bool.
            is_cls: classification.
            detach_outputs: cut the outputs from the graph (fits only the noise).
        """
        if detach_outputs:
            out = out.detach()
        m = out.shape[1]
        if is_cls:
            lp = torch.log_softmax(out, -1)  # [T, M, Q, C]
            comp = lp.gather(-1, y.unsqueeze(1).expand(*lp.shape[:3]).unsqueeze(-1)).squeeze(-1)  # [T, M, Q]
            per_point = -(torch.logsumexp(comp, 1) - math.log(m))
        else:
            var = torch.as_tensor(self.noise_variance(), dtype=out.dtype, device=out.device)
            comp = (-0.5 * (_LOG_2PI + var.log() + (y.unsqueeze(1) - out) ** 2 / var)).sum(-1)  # [T, M, Q]
            # per output dimension, like MAML's squared error averaged over Dy
            per_point = -(torch.logsumexp(comp, 1) - math.log(m)) / out.shape[-1]
        w = mask.to(per_point.dtype)
        return (per_point * w).sum() / w.sum()

    def _query_metrics(self, out: torch.Tensor, batch: TaskBatch) -> dict[str, float]:
        """Detached diagnostics of the mixture on the query set (``mse``/``accuracy``, ``nll``)."""
        with torch.no_grad():
            mask = _support_mask(batch.query)
            w = mask.to(out.dtype)
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

    config_keys: ClassVar[tuple[str, ...]] = (
        "n_particles",
        "inner_lr",
        "inner_steps",
        "leader_steps",
        "objective",
        "bandwidth",
        "normalize",
        "prior",
        "prior_init_std",
        "prior_weight",
        "test_inner_steps",
        "chunk_size",
        "noise",
    )

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
        noise: float | Literal["learned"] = "learned",
    ) -> None:
        super().__init__(model, inner_lr, inner_steps, test_inner_steps, chunk_size, task_kind, noise)
        self.prior_weight = _option_float("prior_weight", prior_weight, allow_zero=True)
        self.n_particles = _option_int("n_particles", n_particles, 1)
        self.leader_steps = _option_int("leader_steps", leader_steps, 1)
        if objective not in ("chaser", "nll"):
            raise ConfigError(f"objective: expected 'chaser' or 'nll', got {objective!r}")
        self.objective = objective
        self.bandwidth = None if bandwidth is None else _option_float("bandwidth", bandwidth)
        if not isinstance(normalize, bool):
            raise ConfigError(f"normalize: expected a bool, got {normalize!r}")
        self.normalize = normalize
        self.prior: DiagonalGaussianPrior | None = None
        self.extra_particles: nn.ParameterDict | None = None
        if prior == "learned":
            self.prior = DiagonalGaussianPrior(model, init_std=_option_float("prior_init_std", prior_init_std))
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
        params = dict(self.model.named_parameters())
        out: Params = {}
        for k, p in params.items():
            stack = p.unsqueeze(0)
            if self.extra_particles is not None:
                stack = torch.cat([stack, self.extra_particles[k.replace(".", "__")]], 0)
            out[k] = stack.unsqueeze(0).expand(t, *stack.shape)
        return out

    def _scale(self, mask: torch.Tensor, n_way: int | None, dy: int) -> torch.Tensor:
        """``tau_t`` of every task (``[T]``): the factor turning the log posterior into MAML's units."""
        s = mask.sum(1).to(self._dtype())
        if n_way is not None:
            return 1.0 / s
        var = torch.as_tensor(self.noise_variance(), dtype=s.dtype, device=s.device).detach()
        return 2.0 * var / (s * dy)

    def _dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def _svgd(self, particles: Params, s: SupportSet, steps: int) -> Params:
        mask = _support_mask(s)
        is_cls = s.n_way is not None
        dy = 1 if is_cls else s.y.shape[-1]
        loss = self._task_loss(is_cls)
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
        return batched_svgd_steps(
            lambda p, x, y, m: -loss(p, x, y, m), particles, s.x, s.y, mask, steps, self.inner_lr,
            bandwidth=self.bandwidth, temperature=self._scale(mask, s.n_way, dy), normalize=self.normalize,
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
        self._check_out_dim(batch.n_way)
        start = self.initial_particles(batch.n_tasks)
        follower = self._svgd(start, batch.support, self.inner_steps)
        _check_finite_params(follower, "SVGD on the support set")
        out = self._particle_outputs(
            follower, batch.query_x, batch.support_x, batch.support_mask, batch.query_mask
        )  # [T, M, Q, out]
        qmask = _support_mask(batch.query)
        metrics = self._query_metrics(out, batch)
        if self.objective == "nll":
            loss = self._mixture_nll(out, batch.query_y, qmask, batch.is_classification)
        else:
            with torch.no_grad():
                leader = self._svgd({k: v.detach() for k, v in follower.items()}, batch.joint(), self.leader_steps)
            _check_finite_params(leader, "the chaser's leader")
            # squared distance summed over particles and parameters, then averaged over tasks
            dist = sum(((follower[k] - leader[k]) ** 2).flatten(1).sum(1) for k in follower)
            loss = dist.mean()
            metrics["chaser"] = float(loss.detach())
            if self.log_noise is not None:
                # maximum-likelihood noise on detached outputs: it cannot move the particles
                loss = loss + self._mixture_nll(out, batch.query_y, qmask, False, detach_outputs=True)
        if self.log_noise is not None:
            metrics["noise_std"] = float(self.log_noise.detach().exp())
        metrics["loss"] = float(loss.detach())
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
        self._check_out_dim(support.n_way)
        k = self.test_inner_steps if steps is None else check_positive_int("steps", steps, minimum=0)
        seeds = task_seeds(task_keys(support.x, support.y, support.mask), generator) if self.prior is not None else None
        particles = self._svgd(self.initial_particles(support.n_tasks, seeds=seeds), support, k)
        _check_finite_params(particles, "SVGD on the support set")
        return self._posterior(particles, support)

    def extra_repr(self) -> str:
        prior = "learned" if self.prior is not None else "particle set"
        return (
            f"n_particles={self.n_particles}, inner_lr={self.inner_lr}, inner_steps={self.inner_steps}, "
            f"objective={self.objective!r}, prior={prior}, bandwidth={self.bandwidth}"
        )
