"""Reptile (Nichol, Achiam & Schulman 2018): first-order meta-learning by moving toward adapted weights.

q(phi_t | support) is MAML's point mass at K gradient steps from theta (Reptile is the point case
of the gradient family and inherits MAML's ``adapt`` and ``predict``). Only the outer update
differs: Reptile moves theta toward the mean of the adapted parameters,

    theta <- theta + epsilon * (mean_t phi_t,K - theta),

with no derivative through the inner loop. In this library every learner returns a scalar
``meta_loss`` that the trainer's optimizer minimizes, so the update is expressed as the loss

    loss = 1/2 * sum_params || theta - stopgrad(mean_t phi_t,K) ||^2,

whose gradient with respect to theta is exactly ``theta - mean_t phi_t,K``: plain SGD with
learning rate epsilon on it is the paper's serial/batched Reptile update, and Adam on it is the
paper's "Reptile with Adam" variant. The inner steps run on detached parameters (no graph is
built through them), so memory does not grow with K. The value of the loss is half the squared
distance travelled by the (mean) adaptation.

The inner loop runs on the support set, as at test time; the query set serves only for the
logged diagnostics (``query_loss``, ``accuracy``/``mse``) and, for regression with
``noise="learned"``, for the maximum-likelihood noise fit on detached residuals (as in MAML).
"""

from __future__ import annotations

import torch
from torch import nn

from bayesmeta.inference.base import StepOutput, TaskKind
from bayesmeta.inference.gradient_base import Noise, check_finite_params, option_int
from bayesmeta.inference.maml import MAML
from bayesmeta.tasks.batch import TaskBatch

__all__ = ["Reptile"]


class Reptile(MAML):
    """Reptile: MAML's inner loop, first-order outer step toward the adapted parameters.

    Args:
        model: the backbone; its parameters are theta (all of them adapt).
        inner_lr: inner step size.
        inner_steps: K >= 1 inner steps during meta-training (K = 0 would give no update).
        test_inner_steps: K used by :meth:`adapt`; defaults to ``inner_steps``.
        chunk_size: tasks per vmapped chunk (memory cap); ``None`` for all at once.
        task_kind: ``"classification"``, ``"regression"`` or ``None`` (either, by the batch).
        noise: regression observation noise std: ``"learned"`` or a fixed positive float.

    Shapes:
        as :class:`~bayesmeta.inference.MAML`.

    Raises:
        ConfigError: an option out of range.
    """

    def __init__(
        self,
        model: nn.Module,
        inner_lr: float = 0.01,
        inner_steps: int = 5,
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

    def meta_loss(self, batch: TaskBatch) -> StepOutput:
        """Half the squared distance from theta to the tasks' mean adapted parameters (see the module docstring).

        Args:
            batch: T tasks.

        Returns:
            ``loss`` whose gradient is ``theta - mean_t phi_t,K`` (plus the noise fit), and
            diagnostics ``distance``, ``query_loss``, ``accuracy`` or ``mse``.

        Raises:
            NumericalError: the inner loop produced NaN/Inf.
        """
        self.check_batch(batch)
        with torch.no_grad():
            post = self._adapt(batch.support, self.inner_steps, first_order=True)
            check_finite_params(post.params, "the inner gradient steps")
            out = self._outputs(post, batch.query_x, batch.query_mask)  # [T, Q, out]
        theta, _ = self._split_params()
        target = {k: v.mean(0) for k, v in post.params.items()}  # mean over tasks, detached
        loss = 0.5 * sum(((theta[k] - target[k]) ** 2).sum() for k in theta)
        query_loss, metrics = self._query_objective(out, batch)
        metrics.update(distance=float(loss.detach()), query_loss=float(query_loss))
        return self._finish(loss, out, batch, metrics)

    def extra_repr(self) -> str:
        return f"inner_lr={self.inner_lr}, inner_steps={self.inner_steps}, test_inner_steps={self.test_inner_steps}"

