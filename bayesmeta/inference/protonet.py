"""Prototypical networks (Snell et al. 2017): q(phi_t | support) is a point mass at the class means.

Logits are ``-||f(x) - c_k||^2``, the squared Euclidean distance to each prototype ``c_k`` (the
mean embedding of class k's support points). That is a linear classifier in f(x) with
``w_k = 2 c_k`` and ``b_k = -||c_k||^2`` (the ``||f(x)||^2`` term is shared by all classes), which
is why VERSA with a point estimate reduces to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bayesmeta.exceptions import ConfigError
from bayesmeta.inference.base import MetaLearner, StepOutput, TaskPosterior
from bayesmeta.masked import masked_mean
from bayesmeta.models._shapes import check_input_shape
from bayesmeta.models.context import (
    context_mode,
    joint_forward,
    kept_context,
    query_forward,
    set_features,
    support_forward,
)
from bayesmeta.models.set_encoders import masked_class_mean
from bayesmeta.predictive import CategoricalPredictive
from bayesmeta.tasks.batch import SupportSet, TaskBatch

__all__ = ["ProtoNet", "ProtoPosterior"]


@dataclass
class ProtoPosterior(TaskPosterior):
    """Class prototypes of every task.

    Attributes:
        prototypes: ``[T, C, D]`` mean support embedding per class.
        support_x: ``[T, S, ...]`` support inputs, kept when the backbone normalizes queries
            with their task's support statistics (``context_mode == "support"``), else ``None``.
        support_mask: ``[T, S]`` bool or ``None``.
    """

    prototypes: torch.Tensor
    support_x: torch.Tensor | None = None
    support_mask: torch.Tensor | None = None

    @property
    def n_tasks(self) -> int:
        return self.prototypes.shape[0]


class ProtoNet(MetaLearner):
    """Prototypical network on any embedding backbone.

    Args:
        backbone: maps ``[N, *features]`` to embeddings ``[N, D]`` (``features()`` is used when
            the backbone has it, so a Conv4 with a head works too).

    Shapes:
        ``adapt``: support ``[T, S, ...]`` -> prototypes ``[T, C, D]``.
        ``predict``: query_x ``[T, Q, ...]`` -> logits ``[1, T, Q, C]``.
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__("classification")
        if not isinstance(backbone, nn.Module):
            raise ConfigError(f"backbone: expected a torch.nn.Module, got {type(backbone).__name__}")
        self.backbone = backbone

    def _embed_fn(self, x: torch.Tensor, context_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Backbone features of ``[T, N, *features]`` inputs, ``[T, N, D]``."""
        f = set_features(self.backbone, x, context_mask)
        return f if context_mode(self.backbone) is not None else f.reshape(*x.shape[:2], -1)

    def embed(self, x: torch.Tensor, name: str = "x") -> torch.Tensor:
        """Embeddings of ``[T, N, *features]`` inputs, ``[T, N, D]``, each set its own context.

        For a support-normalized backbone use :meth:`adapt` / :meth:`predict`, which normalize
        queries with their task's support statistics.
        """
        check_input_shape(self.backbone, x, name)
        return support_forward(self._embed_fn, self.backbone, x, None, set_dim=1)

    @staticmethod
    def logits(embeddings: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        """``-||f(x) - c_k||^2``: embeddings ``[T, Q, D]``, prototypes ``[T, C, D]`` -> ``[T, Q, C]``."""
        # Explicit differences rather than cdist: exact in float64, and cheap at C <= 20.
        return -((embeddings.unsqueeze(2) - prototypes.unsqueeze(1)) ** 2).sum(-1)

    def adapt(self, support: SupportSet) -> ProtoPosterior:
        """Class prototypes from the support set (one forward pass, pure)."""
        self.check_batch(support, "support")
        assert support.n_way is not None
        check_input_shape(self.backbone, support.x, "support_x")
        f = support_forward(self._embed_fn, self.backbone, support.x, support.mask, set_dim=1)
        prototypes, _ = masked_class_mean(f, support.y, support.n_way, support.mask)
        return ProtoPosterior(prototypes, *kept_context(self.backbone, support.x, support.mask))

    def predict(self, posterior: ProtoPosterior, query_x: torch.Tensor) -> CategoricalPredictive:
        """Softmax over negative squared distances, M = 1."""
        self.check_query_x(posterior, query_x)
        check_input_shape(self.backbone, query_x, "query_x")
        f = query_forward(self._embed_fn, self.backbone, query_x, posterior.support_x, posterior.support_mask, set_dim=1)
        return CategoricalPredictive(logits=self.logits(f, posterior.prototypes).unsqueeze(0))

    def meta_loss(self, batch: TaskBatch) -> StepOutput:
        """Query cross-entropy of the prototype classifier, averaged over present query points."""
        self.check_batch(batch)
        check_input_shape(self.backbone, batch.support_x, "support_x")
        check_input_shape(self.backbone, batch.query_x, "query_x")
        assert batch.n_way is not None
        fs, fq = joint_forward(
            self._embed_fn, self.backbone, batch.support_x, batch.support_mask, batch.query_x, 1, batch.query_mask
        )
        prototypes, _ = masked_class_mean(fs, batch.support_y, batch.n_way, batch.support_mask)
        logits = self.logits(fq, prototypes)  # [T, Q, C]
        ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch.query_y.flatten(), reduction="none")
        loss = masked_mean(ce.view_as(batch.query_y), batch.query_mask)
        acc = masked_mean((logits.argmax(-1) == batch.query_y).to(ce.dtype), batch.query_mask)
        return StepOutput(loss, {"loss": float(loss.detach()), "accuracy": float(acc.detach())})
