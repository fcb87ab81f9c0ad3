"""iMAML (Rajeswaran, Finn, Kakade & Levine 2019): implicit meta-gradients of a proximal inner problem.

Each task's adapted parameters approximately solve the proximally regularized support problem

    phi_t = argmin_phi  L_t(phi) + reg / 2 * || phi - theta ||^2,

found by K gradient steps from theta (``inner_lr``, on detached parameters: no graph is built
through the inner loop, so the memory of a meta-step does not grow with K). At a stationary
point ``grad L_t(phi_t) + reg (phi_t - theta) = 0``, and the implicit function theorem gives

    d phi_t / d theta = (I + H_t / reg)^{-1},   H_t = hessian of L_t at phi_t,

so the meta-gradient of the query loss ``Lq`` is ``sum_t (I + H_t / reg)^{-1} grad Lq(phi_t)``.
The linear systems are solved by ``cg_steps`` iterations of conjugate gradient, for all tasks at
once (the Hessian of ``sum_t L_t`` in the stacked ``[T, ...]`` parameters is block diagonal), on
Hessian-vector products by double backward through the vmapped support loss. Only the support
loss enters ``H_t`` (not the proximal term, whose Hessian is the ``reg I`` already factored out).

The learner returns the meta-gradient through a surrogate: ``meta_loss(...).loss`` has the value
of the query loss (for logging) and the gradient ``sum_t x_t`` with respect to theta, via
``<theta, stopgrad(g)> - stopgrad(<theta, g>)``. CG assumes ``I + H_t / reg`` positive definite,
which holds when the support loss's curvature is above ``-reg`` (a larger ``reg`` is safer for
non-convex networks, at the price of smaller adaptation); a negative curvature direction makes
the step size of CG non-positive and that iteration is skipped. Like the paper, the
meta-gradient is exact only at the exact inner solution and after enough CG iterations; the
tests check it against the closed form on a linear-Gaussian problem.

``adapt`` runs the same proximal inner loop with ``test_inner_steps``. For regression with
``noise="learned"`` the observation noise is fitted as in MAML (maximum likelihood on detached
query residuals).
"""

from __future__ import annotations

import torch
from torch import nn

from bayesmeta.exceptions import ConfigError
from bayesmeta.inference.base import StepOutput, TaskKind
from bayesmeta.inference.gradient_base import (
    Noise,
    check_finite_params,
    option_float,
    option_int,
)
from bayesmeta.inference.inner_loop import Params, TaskLoss, as_batched, chunked, with_batched
from bayesmeta.inference.maml import MAML
from bayesmeta.tasks.batch import TaskBatch

__all__ = ["IMAML", "conjugate_gradient"]


def _dot(a: Params, b: Params) -> torch.Tensor:
    """Per-task inner products of two ``{name: [T, ...]}`` dicts, ``[T]``."""
    return sum((a[k] * b[k]).reshape(a[k].shape[0], -1).sum(1) for k in a)  # type: ignore[return-value]


def conjugate_gradient(matvec, b: Params, steps: int) -> Params:
    """Solve ``A_t x_t = b_t`` for every task t by ``steps`` conjugate-gradient iterations from 0.

    Args:
        matvec: ``v -> A v`` on ``{name: [T, ...]}`` (block diagonal over tasks: task t's output
            depends only on task t's input), A symmetric positive definite per task.
        b: right-hand sides ``{name: [T, ...]}``.
        steps: iterations (exact after as many iterations as a task has unknowns, in exact
            arithmetic).

    Returns:
        ``x`` with the layout of ``b``. A task whose residual is zero, or whose search direction
        has non-positive curvature, stops moving.
    """
    x = {k: torch.zeros_like(v) for k, v in b.items()}
    r = dict(b)
    p = dict(b)
    rs = _dot(r, r)
    for _ in range(steps):
        ap = matvec(p)
        curv = _dot(p, ap)
        ok = (curv > 0) & (rs > 0)
        alpha = torch.where(ok, rs / torch.where(ok, curv, torch.ones_like(curv)), torch.zeros_like(rs))
        x = {k: x[k] + _bcast(alpha, x[k]) * p[k] for k in x}
        r = {k: r[k] - _bcast(alpha, r[k]) * ap[k] for k in r}
        rs_new = _dot(r, r)
        beta = torch.where(rs > 0, rs_new / torch.where(rs > 0, rs, torch.ones_like(rs)), torch.zeros_like(rs))
        p = {k: r[k] + _bcast(beta, p[k]) * p[k] for k in p}
        rs = rs_new
    return x


def _bcast(s: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``[T]`` scalars shaped to broadcast against ``[T, ...]``."""
    return s.reshape(-1, *([1] * (like.dim() - 1)))


class IMAML(MAML):
    """Implicit MAML: proximal inner problem, meta-gradient by conjugate gradient on Hessian-vector products.

    Args:
        model: the backbone; its parameters are theta (all of them adapt).
        inner_lr: step size of the inner gradient steps on the regularized support loss.
        inner_steps: K >= 1 inner steps during meta-training.
        reg: lambda > 0, strength of the proximal term ``reg / 2 ||phi - theta||^2``.
        cg_steps: conjugate-gradient iterations per meta-step, >= 1.
        test_inner_steps: K used by :meth:`adapt`; defaults to ``inner_steps``.
        chunk_size: tasks per vmapped chunk of the inner loop (memory cap); ``None`` for all.
        task_kind: ``"classification"``, ``"regression"`` or ``None`` (either, by the batch).
        noise: regression observation noise std: ``"learned"`` or a fixed positive float.

    Shapes:
        as :class:`~bayesmeta.inference.MAML`.

    Raises:
        ConfigError: an option out of range, or ``inner_lr * reg >= 2`` (the inner steps would
            diverge on the proximal term alone).
    """

    def __init__(
        self,
        model: nn.Module,
        inner_lr: float = 0.01,
        inner_steps: int = 5,
        reg: float = 1.0,
        cg_steps: int = 5,
        test_inner_steps: int | None = None,
        chunk_size: int | None = None,
        task_kind: TaskKind | None = None,
        noise: Noise = "learned",
    ) -> None:
        option_int("inner_steps", inner_steps, 1)
        super().__init__(
            model, inner_lr=inner_lr, inner_steps=inner_steps, first_order=True, test_inner_steps=test_inner_steps,
            chunk_size=chunk_size, task_kind=task_kind, noise=noise,
        )
        self.reg = option_float("reg", reg)
        if self.inner_lr * self.reg >= 2.0:
            # the proximal term alone makes each step multiply (phi - theta) by 1 - inner_lr * reg
            raise ConfigError(
                f"inner_lr * reg: expected < 2 for stable inner steps on the proximal term, got "
                f"{self.inner_lr} * {self.reg} = {self.inner_lr * self.reg}"
            )
        self.cg_steps = option_int("cg_steps", cg_steps, 1)

    def _inner_loss(self, support_loss: TaskLoss, theta: Params) -> TaskLoss:
        """Support loss plus ``reg / 2 ||phi - theta||^2`` (theta a constant of the inner problem)."""
        anchor = {k: v.detach() for k, v in theta.items()}
        reg = self.reg

        def loss(p: Params, x: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
            prox = sum(((p[k] - anchor[k]) ** 2).sum() for k in p)
            return support_loss(p, x, y, m) + 0.5 * reg * prox

        batched = as_batched(support_loss)

        def batched_loss(p: Params, x: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
            # p: {name: [T, *shape]}; the proximal term of each task, [T]
            prox = sum(((p[k] - anchor[k]) ** 2).reshape(p[k].shape[0], -1).sum(1) for k in p)
            return batched(p, x, y, m) + 0.5 * reg * prox

        return with_batched(loss, batched_loss)

    def implicit_gradient(self, batch: TaskBatch) -> tuple[Params, torch.Tensor, torch.Tensor, dict[str, float]]:
        """The implicit meta-gradient of the pooled query loss with respect to theta.

        Args:
            batch: T tasks.

        Returns:
            ``(grads, query_loss, outputs, metrics)``: ``{name: grad}`` summed over tasks with
            theta's shapes, the detached query loss, the detached query outputs ``[T, Q, out]``
            and diagnostics (``cg_residual``: the largest relative residual of the linear
            systems after ``cg_steps`` iterations).

        Raises:
            NumericalError: the inner loop produced NaN/Inf.
        """
        with torch.no_grad():
            post = self._adapt(batch.support, self.inner_steps, first_order=True)
        check_finite_params(post.params, "the inner gradient steps")
        phi = {k: v.detach().requires_grad_(True) for k, v in post.params.items()}
        post.params = phi
        with torch.enable_grad():
            out = self._outputs(post, batch.query_x, batch.query_mask)
            query_loss, metrics = self._query_objective(out, batch)
            g = dict(zip(phi, torch.autograd.grad(query_loss, list(phi.values()))))
            loss, inputs, mask = self._support_problem(batch.support)
            per_task = chunked(as_batched(loss), self.chunk_size, phi, inputs, batch.support_y, mask)  # [T]
            first = torch.autograd.grad(per_task.sum(), list(phi.values()), create_graph=True)

            def matvec(v: Params) -> Params:
                hv = torch.autograd.grad(first, list(phi.values()), grad_outputs=list(v.values()), retain_graph=True)
                return {k: v[k] + h.detach() / self.reg for k, h in zip(v, hv)}

            x = conjugate_gradient(matvec, {k: t.detach() for k, t in g.items()}, self.cg_steps)
            res = {k: g[k].detach() - a for k, a in zip(g, matvec(x).values())}
        rel = (_dot(res, res) / _dot(g, g).detach().clamp_min(torch.finfo(out.dtype).tiny)).sqrt()
        metrics["cg_residual"] = float(rel.max())
        return {k: v.sum(0) for k, v in x.items()}, query_loss.detach(), out.detach(), metrics

    def meta_loss(self, batch: TaskBatch) -> StepOutput:
        """A surrogate whose value is the query loss and whose gradient is the implicit meta-gradient.

        Args:
            batch: T tasks.

        Returns:
            ``loss`` (plus the noise fit for a learned regression noise) and diagnostics
            ``accuracy``/``mse``, ``query_loss``, ``cg_residual``.
        """
        self.check_batch(batch)
        grads, query_loss, out, metrics = self.implicit_gradient(batch)
        theta, _ = self._split_params()
        inner = sum((theta[k] * grads[k]).sum() for k in theta)
        loss = query_loss + inner - inner.detach()
        metrics["query_loss"] = float(query_loss)
        return self._finish(loss, out, batch, metrics)

    def extra_repr(self) -> str:
        return f"inner_lr={self.inner_lr}, inner_steps={self.inner_steps}, reg={self.reg}, cg_steps={self.cg_steps}"
