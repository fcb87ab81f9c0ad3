"""MAML and its point-estimate relatives: FOMAML, Meta-SGD and ANIL (Finn et al. 2017).

q(phi_t | support) is a point mass at K gradient steps from the meta-learned initialization theta.
All tasks adapt at once through :func:`~bayesmeta.inference.inner_loop.batched_gradient_steps`.

Variants are options of one class, since they differ only in the inner loop:

- ``first_order=True``: FOMAML (no second-order terms);
- ``learn_inner_lr=True``: Meta-SGD (one learned step size per parameter entry);
- ``adapt="head"``: ANIL (only the backbone's ``head`` adapts; the body's features are computed
  once per task, outside the inner loop);
- ``test_inner_steps``: a different K when adapting at evaluation time.

Regression uses squared error in the inner loop and on the query set, as in the paper. A point
estimate has no predictive spread of its own, so the Gaussian predictive uses a homoscedastic
observation noise: learned by default (fitted by maximum likelihood on the query residuals with
the residuals detached, so it does not change the network's meta-gradient), or fixed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.func import functional_call

from bayesmeta._validation import check_positive_int
from bayesmeta.exceptions import ConfigError, NumericalError
from bayesmeta.inference.base import StepOutput, TaskKind
from bayesmeta.inference.gradient_base import AdaptedParams, GradientLearner, Noise, full_mask
from bayesmeta.inference.inner_loop import Params, TaskLoss, batched_gradient_steps, chunked
from bayesmeta.models._shapes import check_input_shape
from bayesmeta.models.batched import batched_call
from bayesmeta.models.context import context_mode, kept_context, query_forward, support_forward
from bayesmeta.predictive import CategoricalPredictive, GaussianPredictive, Predictive
from bayesmeta.tasks.batch import SupportSet, TaskBatch

__all__ = ["MAML", "MAMLPosterior"]


@dataclass
class MAMLPosterior(AdaptedParams):
    """Point-mass posterior: the adapted parameters of every task.

    Attributes:
        params: adapted parameters, each ``[T, *shape]``.
        n_way: C for classification, ``None`` for regression.
        support_x: ``[T, S, ...]`` support inputs, kept when the backbone normalizes queries with
            their task's support statistics (``context_mode == "support"``), else ``None``.
        support_mask: ``[T, S]`` bool or ``None``.
    """


class MAML(GradientLearner):
    """Model-agnostic meta-learning with a batched, functional inner loop.

    Args:
        model: the backbone; its parameters are theta. For ``adapt="head"`` it must have
            ``features(x)`` and a ``head`` submodule (as :class:`~bayesmeta.models.MLP` and
            :class:`~bayesmeta.models.Conv4` do).
        inner_lr: inner step size alpha (the initial value when ``learn_inner_lr``).
        inner_steps: K, gradient steps during meta-training.
        first_order: FOMAML.
        learn_inner_lr: Meta-SGD.
        adapt: ``"all"`` parameters, ``"head"`` only (ANIL), or a list of parameter-name prefixes.
        test_inner_steps: K used by :meth:`adapt` at evaluation; defaults to ``inner_steps``.
        chunk_size: tasks per vmapped chunk (memory cap); ``None`` for all at once.
        task_kind: ``"classification"``, ``"regression"`` or ``None`` (either, by the batch).
        noise: regression observation noise std: ``"learned"`` or a fixed positive float.

    Shapes:
        ``adapt``: support ``[T, S, ...]`` -> :class:`MAMLPosterior` with params ``[T, *shape]``.
        ``predict``: query_x ``[T, Q, ...]`` -> predictive with M = 1.
    """

    def __init__(
        self,
        model: nn.Module,
        inner_lr: float = 0.01,
        inner_steps: int = 1,
        first_order: bool = False,
        learn_inner_lr: bool = False,
        adapt: Literal["all", "head"] | Sequence[str] = "all",
        test_inner_steps: int | None = None,
        chunk_size: int | None = None,
        task_kind: TaskKind | None = None,
        noise: Noise = "learned",
    ) -> None:
        super().__init__(model, inner_lr, inner_steps, test_inner_steps, chunk_size, task_kind, noise)
        self.first_order = bool(first_order)
        self._anil = adapt == "head"
        names = [n for n, _ in model.named_parameters()]
        if adapt == "all":
            prefixes: tuple[str, ...] = ("",)
        elif adapt == "head":
            if getattr(model, "head", None) is None or not hasattr(model, "features"):
                raise ConfigError(
                    f"adapt: 'head' (ANIL) needs a model with features() and a head module; "
                    f"{type(model).__name__} has none"
                )
            prefixes = ("head.",)
        elif isinstance(adapt, str):
            raise ConfigError(f"adapt: expected 'all', 'head' or a list of name prefixes, got {adapt!r}")
        else:
            prefixes = tuple(adapt)
        self.adapted_names = tuple(n for n in names if n.startswith(prefixes))
        if not self.adapted_names:
            raise ConfigError(f"adapt: no parameter of the model matches {adapt!r}; names are {names}")
        self.inner_lrs: nn.ParameterDict | None = None
        if learn_inner_lr:
            params = dict(model.named_parameters())
            # ParameterDict keys may not contain '.', hence the renaming.
            self.inner_lrs = nn.ParameterDict(
                {n.replace(".", "__"): nn.Parameter(torch.full_like(params[n], self.inner_lr)) for n in self.adapted_names}
            )

    # ------------------------------------------------------------ internals
    def _split_params(self) -> tuple[Params, Params]:
        """(adapted, frozen) parameter dicts of the backbone."""
        params = self.backbone_params()
        adapted = {n: params[n] for n in self.adapted_names}
        frozen = {n: p for n, p in params.items() if n not in adapted}
        return adapted, frozen

    def _step_sizes(self) -> float | dict[str, torch.Tensor]:
        if self.inner_lrs is None:
            return self.inner_lr
        return {n: self.inner_lrs[n.replace(".", "__")] for n in self.adapted_names}

    def _forward_fn(self, frozen: Params):
        """``f(adapted_params, inputs, context_mask=None) -> outputs`` for one task.

        Inputs are body features under ANIL (the linear head needs no normalization context);
        otherwise raw inputs, and ``context_mask`` ``[N]`` goes to a context-normalized backbone.
        """
        if self._anil:
            head = self.model.head
            assert head is not None

            def f(p: Params, inp: torch.Tensor, context_mask: torch.Tensor | None = None) -> torch.Tensor:
                return functional_call(head, {k.removeprefix("head."): v for k, v in p.items()}, (inp,))

            def fb(p: Params, inp: torch.Tensor, context_mask: torch.Tensor | None = None) -> torch.Tensor:
                return batched_call(head, {k.removeprefix("head."): v for k, v in p.items()}, inp)

            f.batched = fb  # type: ignore[attr-defined]
            return f
        return self.forward_fn(frozen)

    def _inner_loss(self, support_loss: TaskLoss, theta: Params) -> TaskLoss:
        """The objective the inner loop steps on, given the support loss and the starting point.

        MAML steps on the support loss itself; iMAML adds its proximal term here.
        """
        return support_loss

    def _inner_context(self) -> str | None:
        """The context mode seen inside the vmapped per-task function (none under ANIL)."""
        return None if self._anil else context_mode(self.model)

    def _support_inputs(self, support_x: torch.Tensor, support_mask: torch.Tensor | None) -> torch.Tensor:
        """What the adapted function consumes at the support points: raw inputs, or ANIL features."""
        if not self._anil:
            return support_x
        return support_forward(self.model.features, self.model, support_x, support_mask, set_dim=1)

    def _support_problem(
        self, support: SupportSet, frozen: Params | None = None
    ) -> tuple[TaskLoss, torch.Tensor, torch.Tensor | None]:
        """The support loss of one task, and what it consumes for every task.

        Returns:
            ``(loss(params, inputs, y, mask), inputs [T, S, ...], mask [T, S] or None)``: inputs
            are raw inputs, or body features under ANIL; the mask is ``None`` when no support
            point is padded.
        """
        if frozen is None:
            _, frozen = self._split_params()
        f = self._forward_fn(frozen)
        loss = self.support_loss(support.n_way is not None, f, self._inner_context() is not None)
        check_input_shape(self.model, support.x, "support_x")
        self.check_out_dim(support.n_way)
        # mask None (no padding): plain means in the inner loop, no weights to differentiate
        return loss, self._support_inputs(support.x, support.mask), support.mask

    def _adapt(
        self, support: SupportSet, steps: int, first_order: bool, split: tuple[Params, Params] | None = None
    ) -> MAMLPosterior:
        adapted, frozen = self._split_params() if split is None else split
        loss, inputs, mask = self._support_problem(support, frozen)
        new = batched_gradient_steps(
            self._inner_loss(loss, adapted), adapted, inputs, support.y, mask, steps, self._step_sizes(),
            first_order=first_order, chunk_size=self.chunk_size,
        )
        return self._posterior(new, support)

    def _posterior(self, params: Params, support: SupportSet) -> MAMLPosterior:
        return MAMLPosterior(params, support.n_way, *kept_context(self.model, support.x, support.mask))

    def _outputs(
        self,
        posterior: MAMLPosterior,
        query_x: torch.Tensor,
        query_mask: torch.Tensor | None = None,
        frozen: Params | None = None,
    ) -> torch.Tensor:
        """Adapted network outputs at the query points, ``[T, Q, out]``.

        A query is normalized with its own task's support statistics (or, for the transductive
        ``norm="batch"``, its task's query set), never with another task's. ``frozen``: the
        backbone's unadapted parameters when the caller has them (default: read them).
        """
        check_input_shape(self.model, query_x, "query_x")
        if frozen is None:
            _, frozen = self._split_params()
        fb = self._forward_fn(frozen).batched  # type: ignore[attr-defined]
        sx, sm = posterior.support_x, posterior.support_mask
        if self._anil:
            feats = query_forward(self.model.features, self.model, query_x, sx, sm, 1, query_mask)
            return chunked(fb, self.chunk_size, posterior.params, feats)
        mode = self._inner_context()
        if mode is None:
            return chunked(fb, self.chunk_size, posterior.params, query_x)
        qm = full_mask(query_x, query_mask)
        if sx is None:  # transductive mode: the query set is its own context
            sx, sm = query_x, qm
        else:
            sm = full_mask(sx, sm)

        def tasks(p: Params, xq: torch.Tensor, xs: torch.Tensor, ms: torch.Tensor, mq: torch.Tensor) -> torch.Tensor:
            return query_forward(lambda x, context_mask=None: fb(p, x, context_mask), self.model, xq, xs, ms, 1, mq)

        return chunked(tasks, self.chunk_size, posterior.params, query_x, sx, sm, qm)

    # ------------------------------------------------------------ interface
    def meta_loss(self, batch: TaskBatch) -> StepOutput:
        """Query loss after ``inner_steps`` steps on the support set, averaged over tasks.

        Args:
            batch: T tasks.

        Returns:
            ``loss`` (cross-entropy, or squared error plus the detached-residual noise fit) and
            diagnostics ``accuracy`` or ``mse``.
        """
        self.check_batch(batch)
        split = self._split_params()  # once per step: read by the inner loop and the query forward
        post = self._adapt(batch.support, self.inner_steps, self.first_order, split)
        out = self._outputs(post, batch.query_x, batch.query_mask, split[1])  # [T, Q, out]
        loss, metrics = self._query_objective(out, batch)
        return self._finish(loss, out, batch, metrics)

    def _finish(self, loss: torch.Tensor, out: torch.Tensor, batch: TaskBatch, metrics: dict[str, float]) -> StepOutput:
        """Add the learned noise's fit on detached query residuals (regression) and log the loss."""
        if self.fits_noise(batch):
            loss = loss + self.noise_fit(out, batch.query_y, full_mask(batch.query_x, batch.query_mask))
            metrics["noise_std"] = float(self.log_noise.detach().exp())
        metrics["loss"] = float(loss.detach())
        return StepOutput(loss, metrics)

    @staticmethod
    def _query_objective(out: torch.Tensor, batch: TaskBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """MAML's query loss, pooled over the present query points of all tasks, and diagnostics.

        Args:
            out: ``[T, Q, out]`` adapted outputs at the query points.
            batch: the T tasks (targets and query mask).

        Returns:
            The mean cross-entropy (with ``accuracy``) or mean squared error averaged over Dy
            (with ``mse``).
        """
        if batch.query_mask is None:  # no padded query: plain means
            if batch.is_classification:
                loss = torch.nn.functional.cross_entropy(out.flatten(0, 1), batch.query_y.flatten())
                acc = (out.argmax(-1) == batch.query_y).to(out.dtype).mean()
                return loss, {"accuracy": float(acc)}
            mse = ((out - batch.query_y) ** 2).mean()
            return mse, {"mse": float(mse.detach())}
        w = batch.query_mask.to(out.dtype)
        if batch.is_classification:
            ce = torch.nn.functional.cross_entropy(out.flatten(0, 1), batch.query_y.flatten(), reduction="none")
            loss = (ce * w.flatten()).sum() / w.sum()
            acc = ((out.argmax(-1) == batch.query_y).to(out.dtype) * w).sum() / w.sum()
            return loss, {"accuracy": float(acc.detach())}
        mse = (((out - batch.query_y) ** 2).mean(-1) * w).sum() / w.sum()
        return mse, {"mse": float(mse.detach())}

    def adapt(self, support: SupportSet, steps: int | None = None) -> MAMLPosterior:
        """Adapt to every task's support set with ``test_inner_steps`` (or ``steps``) steps.

        Pure: the learner's parameters are read, never written. The returned parameters stay on
        the autograd graph (first order or not, as configured); wrap in ``torch.no_grad()`` for
        evaluation.
        """
        self.check_batch(support, "support")
        k = self.test_inner_steps if steps is None else check_positive_int("steps", steps, minimum=0)
        return self._adapt(support, k, self.first_order)

    def predict(self, posterior: MAMLPosterior, query_x: torch.Tensor) -> Predictive:
        """Point-estimate predictive (M = 1) at ``query_x`` ``[T, Q, ...]``."""
        self.check_query_x(posterior, query_x)
        out = self._outputs(posterior, query_x)
        if not bool(torch.isfinite(out).all()):
            bad = (~torch.isfinite(out)).flatten(1).any(1).nonzero().flatten().tolist()
            raise NumericalError(
                f"adapt: the inner loop diverged (non-finite outputs) for task(s) {bad[:10]}; "
                f"lower inner_lr ({self.inner_lr}) or the number of inner steps"
            )
        if posterior.n_way is not None:
            return CategoricalPredictive(logits=out.unsqueeze(0))
        var = torch.as_tensor(self.noise_variance(), dtype=out.dtype, device=out.device)
        return GaussianPredictive(out.unsqueeze(0), var.expand_as(out).unsqueeze(0))
