"""Matching networks (Vinyals et al. 2016): cosine-similarity attention over the support set.

q(phi_t | support) is a point mass at the task's embedded support set; a query's class
distribution is the attention-weighted vote of the support labels,

    p(y = k | x, S) = sum_i a(x, x_i) [y_i = k],   a(x, x_i) = softmax_i( scale * cos(f(x), g(x_i)) ),

the softmax running over the task's present support points. The learner returns the exact
log-probabilities ``log p(y = k | x, S)`` (a log-sum-exp over class k's support points minus one
over all of them), so the predictive is exactly the paper's. ``f = g`` is the backbone's embedding.

``scale`` multiplies the cosine before the softmax (1, the paper's plain cosine, by default;
cosines lie in [-1, 1], so with many support points the attention is close to uniform at the
start and a larger or learned ``scale`` trains faster, as in later implementations).

Full-context embeddings (``fce=True``, the paper's appendix; off by default): the support
embeddings become ``g(x_i, S) = g'(x_i) + h_fwd_i + h_bwd_i`` from a bidirectional LSTM over the
task's present support points *in the order given* (so predictions then depend on the support
order, as in the paper), and each query's embedding is refined by ``fce_steps`` steps of an
attention LSTM reading the support set (the read-out ``r_{k-1}`` enters the LSTM as input next to
``f'(x)``, as common implementations do, rather than concatenated to the hidden state). A query's embedding still depends only on its own
task's support set and on itself, so the non-transductive rule holds. Padded (absent) support
points are removed from the LSTM's sequence, not fed to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bayesmeta._validation import describe, option_float, option_int
from bayesmeta.exceptions import ConfigError, ShapeError
from bayesmeta.inference.base import MetaLearner, StepOutput, TaskPosterior
from bayesmeta.masked import masked_mean
from bayesmeta.models._shapes import check_input_shape
from bayesmeta.models.context import (
    joint_forward,
    kept_context,
    query_forward,
    set_features,
    support_forward,
)
from bayesmeta.models.set_encoders import check_class_counts
from bayesmeta.predictive import CategoricalPredictive
from bayesmeta.tasks.batch import SupportSet, TaskBatch, full_mask

__all__ = ["MatchingNet", "MatchingPosterior", "cosine_attention_log_probs"]


@dataclass
class MatchingPosterior(TaskPosterior):
    """Every task's embedded support set.

    Attributes:
        embeddings: ``[T, S, D]`` support embeddings ``g(x_i, S)``.
        labels: ``[T, S]`` int64 support labels.
        mask: ``[T, S]`` bool, True where a support point is present.
        n_way: C.
        support_x: ``[T, S, ...]`` support inputs, kept when the backbone normalizes queries with
            their task's support statistics (``context_mode == "support"``), else ``None``.
        support_mask: ``[T, S]`` bool or ``None`` (as given, for the backbone's context).
    """

    embeddings: torch.Tensor
    labels: torch.Tensor
    mask: torch.Tensor
    n_way: int
    support_x: torch.Tensor | None = None
    support_mask: torch.Tensor | None = None

    @property
    def n_tasks(self) -> int:
        return self.embeddings.shape[0]


def cosine_attention_log_probs(
    query: torch.Tensor, support: torch.Tensor, labels: torch.Tensor, n_way: int, mask: torch.Tensor, scale: torch.Tensor | float = 1.0
) -> torch.Tensor:
    """``log sum_i softmax_i(scale cos(q, s_i)) [y_i = k]`` for every query and class.

    Args:
        query: ``[T, Q, D]`` query embeddings.
        support: ``[T, S, D]`` support embeddings.
        labels: ``[T, S]`` int64 in ``[0, n_way)``.
        n_way: C.
        mask: ``[T, S]`` bool; absent support points get no attention.
        scale: multiplies the cosine similarities.

    Returns:
        ``[T, Q, C]`` class log-probabilities (each row log-sums-exp to 0).
    """
    cos = F.normalize(query, dim=-1) @ F.normalize(support, dim=-1).mT  # [T, Q, S]
    neg_inf = torch.tensor(-math.inf, dtype=cos.dtype, device=cos.device)
    scores = torch.where(mask.unsqueeze(1), scale * cos, neg_inf)
    log_attn = scores - torch.logsumexp(scores, -1, keepdim=True)  # [T, Q, S]
    member = F.one_hot(labels, n_way).bool() & mask.unsqueeze(-1)  # [T, S, C]
    per_class = torch.where(member.unsqueeze(1), log_attn.unsqueeze(-1), neg_inf)  # [T, Q, S, C]
    return torch.logsumexp(per_class, 2)


def _check_classes(labels: torch.Tensor, n_way: int, mask: torch.Tensor) -> None:
    check_class_counts(F.one_hot(labels, n_way) * mask.unsqueeze(-1))


class _FullContext(nn.Module):
    """The paper's full-context embeddings: a bidirectional LSTM over the support set, an attention LSTM for queries."""

    def __init__(self, dim: int, steps: int) -> None:
        super().__init__()
        self.steps = steps
        self.support_lstm = nn.LSTM(dim, dim, batch_first=True, bidirectional=True)
        self.query_cell = nn.LSTMCell(2 * dim, dim)

    def support(self, g: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``g'(x_i) + h_fwd_i + h_bwd_i`` over the present points in their given order: ``[T, S, D]``."""
        t, s, d = g.shape
        order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)  # present points first, order kept
        packed_in = torch.gather(g, 1, order.unsqueeze(-1).expand(t, s, d))
        lengths = mask.sum(1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(packed_in, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.support_lstm(packed)
        h, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=s)  # [T, S, 2D]
        ctx = h[..., :d] + h[..., d:]
        back = torch.empty_like(ctx).scatter_(1, order.unsqueeze(-1).expand(t, s, d), ctx)
        return torch.where(mask.unsqueeze(-1), g + back, torch.zeros((), dtype=g.dtype, device=g.device))

    def query(self, f: torch.Tensor, g: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``steps`` attention-LSTM steps per query, reading the task's support embeddings: ``[T, Q, D]``."""
        t, q, d = f.shape
        flat = f.reshape(t * q, d)
        h = torch.zeros_like(flat)
        c = torch.zeros_like(flat)
        neg_inf = torch.tensor(-math.inf, dtype=f.dtype, device=f.device)
        for _ in range(self.steps):
            # r_{k-1}: attention read-out of the support set with h_{k-1}
            scores = torch.where(mask.unsqueeze(1), h.reshape(t, q, d) @ g.mT, neg_inf)  # [T, Q, S]
            r = (torch.softmax(scores, -1) @ g).reshape(t * q, d)
            h_raw, c = self.query_cell(torch.cat([flat, r], -1), (h, c))
            h = h_raw + flat  # h_k = h^_k + f'(x)
        return h.reshape(t, q, d)


class MatchingNet(MetaLearner):
    """Matching network on any embedding backbone (classification).

    Args:
        backbone: maps ``[N, *features]`` to embeddings ``[N, D]`` (``features()`` is used when
            the backbone has it, so a Conv4 with a head works too).
        scale: multiplies the cosine similarities before the softmax (> 0; 1 is the paper's).
        learn_scale: meta-learn ``scale`` (as a log) instead of fixing it.
        fce: full-context embeddings (the paper's appendix; see the module docstring).
        fce_steps: attention-LSTM steps per query when ``fce``.
        feature_dim: D, needed for ``fce`` when the backbone has no ``feature_dim`` attribute.

    Shapes:
        ``adapt``: support ``[T, S, ...]`` -> :class:`MatchingPosterior` (``[T, S, D]``).
        ``predict``: query_x ``[T, Q, ...]`` -> :class:`CategoricalPredictive` with M = 1.
    """

    def __init__(
        self,
        backbone: nn.Module,
        scale: float = 1.0,
        learn_scale: bool = False,
        fce: bool = False,
        fce_steps: int = 3,
        feature_dim: int | None = None,
    ) -> None:
        super().__init__("classification")
        if not isinstance(backbone, nn.Module):
            raise ConfigError(f"backbone: expected a torch.nn.Module, got {type(backbone).__name__}")
        for name, flag in (("learn_scale", learn_scale), ("fce", fce)):
            if not isinstance(flag, bool):
                raise ConfigError(f"{name}: expected a bool, got {flag!r}")
        self.backbone = backbone
        self.fixed_scale: float | None = option_float("scale", scale)
        self.log_scale: nn.Parameter | None = None
        if learn_scale:
            # a Python float when fixed, so that the scale is exact in any dtype
            self.log_scale = nn.Parameter(torch.tensor(math.log(self.fixed_scale)))
            self.fixed_scale = None
        self.fce: _FullContext | None = None
        if fce:
            d = feature_dim if feature_dim is not None else getattr(backbone, "feature_dim", None)
            if d is None:
                raise ConfigError("feature_dim: fce needs the embedding size; the backbone has no feature_dim, pass feature_dim=")
            self.fce = _FullContext(option_int("feature_dim", d, 1), option_int("fce_steps", fce_steps, 1))

    # ------------------------------------------------------------ internals
    def _embed_fn(self, x: torch.Tensor, context_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Backbone embeddings of ``[T, N, *features]`` inputs, ``[T, N, D]``."""
        out = set_features(self.backbone, x, context_mask)
        if out.dim() != 3:
            raise ShapeError(f"backbone: expected embeddings [N, D] per task, got {describe(out)}")
        return out

    def _support_embeddings(self, g: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return g if self.fce is None else self.fce.support(g, mask)

    def _query_embeddings(self, f: torch.Tensor, g: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return f if self.fce is None else self.fce.query(f, g, mask)

    def scale(self) -> torch.Tensor | float:
        """The factor multiplying the cosine similarities."""
        return self.fixed_scale if self.log_scale is None else self.log_scale.exp()

    def _log_probs(self, fq: torch.Tensor, post: MatchingPosterior) -> torch.Tensor:
        fq = self._query_embeddings(fq, post.embeddings, post.mask)
        return cosine_attention_log_probs(fq, post.embeddings, post.labels, post.n_way, post.mask, self.scale())

    # ------------------------------------------------------------ interface
    def adapt(self, support: SupportSet) -> MatchingPosterior:
        """Embed every task's support set (one forward pass, pure)."""
        self.check_batch(support, "support")
        assert support.n_way is not None
        check_input_shape(self.backbone, support.x, "support_x")
        mask = full_mask(support.x, support.mask)
        _check_classes(support.y, support.n_way, mask)
        g = support_forward(self._embed_fn, self.backbone, support.x, support.mask, set_dim=1)
        return MatchingPosterior(
            self._support_embeddings(g, mask), support.y, mask, support.n_way,
            *kept_context(self.backbone, support.x, support.mask),
        )

    def predict(self, posterior: MatchingPosterior, query_x: torch.Tensor) -> CategoricalPredictive:
        """The attention vote's class probabilities at ``query_x`` ``[T, Q, ...]``, M = 1."""
        if not isinstance(posterior, MatchingPosterior):
            raise ShapeError(f"posterior: expected a MatchingPosterior, got {type(posterior).__name__}")
        self.check_query_x(posterior, query_x)
        check_input_shape(self.backbone, query_x, "query_x")
        fq = query_forward(self._embed_fn, self.backbone, query_x, posterior.support_x, posterior.support_mask, set_dim=1)
        return CategoricalPredictive(logits=self._log_probs(fq, posterior).unsqueeze(0))

    def meta_loss(self, batch: TaskBatch) -> StepOutput:
        """Query cross-entropy of the attention vote, averaged over present query points."""
        self.check_batch(batch)
        assert batch.n_way is not None
        check_input_shape(self.backbone, batch.support_x, "support_x")
        check_input_shape(self.backbone, batch.query_x, "query_x")
        mask = full_mask(batch.support_x, batch.support_mask)
        _check_classes(batch.support_y, batch.n_way, mask)
        g, fq = joint_forward(
            self._embed_fn, self.backbone, batch.support_x, batch.support_mask, batch.query_x, 1, batch.query_mask
        )
        post = MatchingPosterior(self._support_embeddings(g, mask), batch.support_y, mask, batch.n_way)
        log_probs = self._log_probs(fq, post)  # [T, Q, C]
        nll = -log_probs.gather(-1, batch.query_y.unsqueeze(-1)).squeeze(-1)
        loss = masked_mean(nll, batch.query_mask)
        acc = masked_mean((log_probs.argmax(-1) == batch.query_y).to(nll.dtype), batch.query_mask)
        return StepOutput(loss, {"loss": float(loss.detach()), "accuracy": float(acc.detach())})

    def extra_repr(self) -> str:
        return f"scale={float(self.scale()):.4g}, learn_scale={self.log_scale is not None}, fce={self.fce is not None}"
