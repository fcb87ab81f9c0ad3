"""The shared base of the gradient family: MAML, Reptile, iMAML, BMAML and PLATIPUS.

Every learner of the family adapts a backbone's parameters by steps on one *support loss* (MAML's:
mean squared error averaged over output dimensions, or mean cross-entropy, over the task's
present support points) and predicts with a homoscedastic Gaussian *noise model* for regression.
:class:`GradientLearner` holds what they share, so that it is written once:

- the backbone ``model`` and the inner-loop options (``inner_lr``, ``inner_steps``,
  ``test_inner_steps``, ``chunk_size``), validated by the library's one option validator
  (:func:`option_int` / :func:`option_float`, re-exported from ``bayesmeta._validation``), which
  raises :class:`~bayesmeta.exceptions.ConfigError` for every bad option of every learner;
- the noise model: ``noise="learned"`` (a log standard deviation ``log_noise``, starting at std 1,
  fitted by maximum likelihood on *detached* query residuals so it never moves the network's
  meta-gradient) or a fixed positive finite float (``fixed_noise``);
- :meth:`GradientLearner.forward_fn` (a ``functional_call`` of the backbone with some of its
  parameters replaced, context mask passed to a context-normalized backbone) and
  :meth:`GradientLearner.support_loss`, the loss every inner loop steps on;
- the ``n_way`` / head-size check and the non-finite-parameter check.

The specific learners differ only in what they do with these: MAML differentiates through K
steps (point mass), Reptile moves theta toward the adapted parameters (first order), iMAML uses
the implicit function theorem at a proximally regularized solution, BMAML moves M particles by
SVGD, PLATIPUS samples around a gradient-step mean
(:mod:`~bayesmeta.inference.particles` holds the M-particle predictive of the last two).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.func import functional_call

from bayesmeta._validation import option_float, option_int
from bayesmeta.exceptions import ConfigError, NumericalError, ShapeError
from bayesmeta.inference.base import MetaLearner, TaskKind, TaskPosterior
from bayesmeta.inference.inner_loop import (
    Params,
    TaskLoss,
    cross_entropy_loss,
    squared_error_loss,
    with_batched,
)
from bayesmeta.models.batched import batched_call
from bayesmeta.models.context import context_mode
from bayesmeta.tasks.batch import TaskBatch, full_mask

__all__ = [
    "AdaptedParams",
    "GradientLearner",
    "Noise",
    "check_finite_params",
    "full_mask",
    "option_float",
    "option_int",
]

#: The regression noise option every gradient learner accepts.
Noise = float | Literal["learned"]


def check_finite_params(params: Params, what: str) -> None:
    """Raise :class:`NumericalError` if any adapted parameter holds NaN/Inf.

    Called once per inner loop (all tasks and particles at once), never inside it. The happy
    path is one sum per parameter and one host sync: a sum is finite only if every entry is (a
    NaN or an infinity makes it NaN or infinite), so a finite total proves every parameter
    finite. Only a non-finite total (which a finite sum overflowing could also give) runs the
    exact per-parameter test that names the culprits.
    """
    if not params:
        return
    with torch.no_grad():
        total = torch.stack([v.detach().sum(dtype=torch.float64 if v.dtype == torch.float64 else None) for v in params.values()])
        if bool(torch.isfinite(total).all()):
            return
        bad = [k for k, v in params.items() if not bool(torch.isfinite(v).all())]
    if bad:
        raise NumericalError(
            f"particles: {what} produced NaN/Inf in {bad}; the inner loop diverged or the "
            f"meta-parameters are not finite (lower inner_lr, or check the learner's parameters)"
        )


@dataclass
class AdaptedParams(TaskPosterior):
    """What a gradient-family posterior holds: adapted parameters per task, plus kept context.

    The point case (:class:`~bayesmeta.inference.maml.MAMLPosterior`, ``params`` ``[T, *shape]``)
    and the particle case (:class:`~bayesmeta.inference.particles.ParticlePosterior`, ``params``
    ``[T, M, *shape]``) share these fields.

    Attributes:
        params: adapted parameters, leading dim T (tasks).
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


def _param_at(model: nn.Module, mods: tuple[str, ...], attr: str) -> torch.Tensor | None:
    """``model``'s parameter ``attr`` of the submodule at path ``mods``; None if there is none."""
    m: nn.Module | None = model
    for s in mods:
        m = m._modules.get(s) if m is not None else None
    return None if m is None else m._parameters.get(attr)


class GradientLearner(MetaLearner):
    """Backbone, inner-loop options, support loss and noise model of the gradient family.

    Not a method on its own (see the module docstring).

    Args:
        model: the backbone; its parameters are (part of) theta.
        inner_lr: inner step size, a positive finite float.
        inner_steps: K >= 0 during meta-training.
        test_inner_steps: K used by ``adapt``; defaults to ``inner_steps``.
        chunk_size: tasks per vmapped chunk (memory cap); ``None`` for all at once.
        task_kind: ``"classification"``, ``"regression"`` or ``None`` (either, by the batch).
        noise: regression observation noise std, ``"learned"`` or a fixed positive finite float.

    Raises:
        ConfigError: any option out of range.
    """

    def __init__(
        self,
        model: nn.Module,
        inner_lr: float,
        inner_steps: int,
        test_inner_steps: int | None,
        chunk_size: int | None,
        task_kind: TaskKind | None,
        noise: Noise,
    ) -> None:
        super().__init__(task_kind)
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        if not list(model.parameters()):
            raise ConfigError(f"model: {type(model).__name__} has no parameters to adapt")
        self.model = model
        # (name, submodule path, attribute) of every backbone parameter: the inner loop reads the
        # parameters along these paths on every step instead of walking the module tree (a
        # ``named_parameters`` walk cost ~15 us of a ~1.5 ms MAML meta-step, twice per step)
        self._param_paths: tuple[tuple[str, tuple[str, ...], str], ...] = tuple(
            (n, tuple(n.split(".")[:-1]), n.rsplit(".", 1)[-1]) for n, _ in model.named_parameters()
        )
        self.inner_lr = option_float("inner_lr", inner_lr)
        self.inner_steps = option_int("inner_steps", inner_steps, 0)
        self.test_inner_steps = (
            self.inner_steps if test_inner_steps is None else option_int("test_inner_steps", test_inner_steps, 0)
        )
        self.chunk_size = None if chunk_size is None else option_int("chunk_size", chunk_size, 1)
        self.log_noise: nn.Parameter | None = None
        self.fixed_noise: float | None = None
        if noise == "learned":
            if task_kind != "classification":
                ref = next(model.parameters())
                # noise std 1 at the start: too small a start makes early NLLs explode
                self.log_noise = nn.Parameter(torch.zeros((), dtype=ref.dtype, device=ref.device))
        elif isinstance(noise, str):
            raise ConfigError(f"noise: expected 'learned' or a positive finite float, got {noise!r}")
        else:
            self.fixed_noise = option_float("noise", noise)

    # ------------------------------------------------------------- backbone
    def backbone_params(self) -> Params:
        """The backbone's parameters by name, ``dict(model.named_parameters())``, read along paths.

        Each parameter is looked up by its name on every call, so a parameter or submodule
        replaced after construction is seen; a backbone whose structure no longer has one of the
        names falls back to the module walk.
        """
        out: Params = {}
        for name, mods, attr in self._param_paths:
            p = _param_at(self.model, mods, attr)
            if p is None:
                return dict(self.model.named_parameters())
            out[name] = p
        return out

    def _placement_reference(self) -> torch.Tensor | None:
        _, mods, attr = self._param_paths[0]
        p = _param_at(self.model, mods, attr)
        return p if p is not None and p.is_floating_point() else super()._placement_reference()

    def forward_fn(self, frozen: Params | None = None) -> Callable[..., torch.Tensor]:
        """``f(params, x, context_mask=None) -> outputs`` for one parameter set.

        Args:
            frozen: backbone parameters that ``params`` does not replace (the body under ANIL);
                ``None`` when ``params`` holds all of them.

        Returns:
            A pure function ``[N, ...] -> [N, out]``; ``context_mask`` ``[N]`` goes to a
            context-normalized backbone. Its ``batched`` attribute is the same function for T
            parameter sets at once, ``fb(params {name: [T, *shape]}, x [T, N, ...],
            context_mask [T, N] | None) -> [T, N, out]``
            (:func:`~bayesmeta.models.batched.batched_call`: the backbone's hand-batched forward
            where it has one).
        """
        fixed = {} if frozen is None else frozen
        model = self.model

        def f(p: Params, inp: torch.Tensor, context_mask: torch.Tensor | None = None) -> torch.Tensor:
            kwargs = {} if context_mask is None else {"context_mask": context_mask}
            return functional_call(model, {**fixed, **p, **dict(model.named_buffers())}, (inp,), kwargs)

        def fb(p: Params, inp: torch.Tensor, context_mask: torch.Tensor | None = None) -> torch.Tensor:
            t = inp.shape[0]
            # shared (frozen) parameters as [T, *shape] views, so the batched forward sees them all
            full = {**{k: v.expand(t, *v.shape) for k, v in fixed.items()}, **p}
            return batched_call(model, full, inp, context_mask)

        f.batched = fb  # type: ignore[attr-defined]
        return f

    def support_loss(self, is_cls: bool, f: Callable[..., torch.Tensor] | None = None, in_context: bool | None = None) -> TaskLoss:
        """The support loss ``L(params, x, y, mask)`` of one parameter set of one task.

        Args:
            is_cls: cross-entropy (classification) or squared error averaged over Dy.
            f: the function to evaluate (default :meth:`forward_fn` of all parameters); its
                ``batched`` attribute, when it has one, gives the loss's batched form.
            in_context: whether ``f`` takes a context mask (default: the backbone is
                context-normalized); a context-normalized backbone takes its task statistics
                from the present support points.

        Returns:
            The per-task loss, with its batched form (``[T]`` losses of T parameter sets, see
            :mod:`~bayesmeta.inference.inner_loop`) attached as ``batched``.
        """
        fn = self.forward_fn() if f is None else f
        ctx = context_mode(self.model) is not None if in_context is None else in_context

        def per_set(fwd: Callable[..., torch.Tensor]) -> TaskLoss:
            def loss(p: Params, x: torch.Tensor, y: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
                out = fwd(p, x, m) if ctx else fwd(p, x)
                return cross_entropy_loss(out, y, m) if is_cls else squared_error_loss(out, y, m)

            return loss

        fb = getattr(fn, "batched", None)
        one = per_set(fn)
        return one if fb is None else with_batched(one, per_set(fb))

    def check_out_dim(self, n_way: int | None) -> None:
        """Raise :class:`ShapeError` if the batch's n_way differs from the head's number of logits."""
        out_features = getattr(self.model, "out_features", None)
        if out_features is not None and n_way is not None and out_features != n_way:
            raise ShapeError(
                f"n_way: the model's head has out_features = {out_features} logits, but the batch is {n_way}-way"
            )

    # ---------------------------------------------------------- noise model
    def noise_variance(self) -> torch.Tensor | float:
        """Regression observation-noise variance used by the predictive."""
        if self.fixed_noise is not None:
            return self.fixed_noise**2
        if self.log_noise is None:
            raise ConfigError(f"noise: this {type(self).__name__} was built for classification and has no regression noise")
        return torch.exp(2.0 * self.log_noise)

    def fits_noise(self, batch: TaskBatch) -> bool:
        """Whether the meta-loss fits the learned regression noise on ``batch``.

        Only with a learned noise and a regression batch: a learner built with ``task_kind=None``
        keeps the noise for regression batches and must leave it out of a classification loss.
        """
        return self.log_noise is not None and not batch.is_classification

    def noise_fit(self, out: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Maximum-likelihood term of a learned noise on *detached* outputs (it cannot move theta).

        Args:
            out: ``[T, Q, Dy]`` point predictions.
            y: ``[T, Q, Dy]`` targets.
            mask: ``[T, Q]`` bool.

        Returns:
            The mean Gaussian NLL per point and output dimension (a scalar with a gradient to
            ``log_noise`` only), or a zero when the noise is fixed.
        """
        if self.log_noise is None:
            return out.new_zeros(())
        var = torch.exp(2.0 * self.log_noise)
        nll = 0.5 * (torch.log(2 * math.pi * var) + (out.detach() - y) ** 2 / var).mean(-1)
        w = mask.to(nll.dtype)
        return (nll * w).sum() / w.sum()
