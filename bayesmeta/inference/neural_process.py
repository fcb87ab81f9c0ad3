"""Shared machinery of the neural-process family (CNP, NP, ANP).

A neural process (Garnelo et al., 2018a,b; Kim et al., 2019) is a conditional model
``p(y* | x*, C)`` of a task's targets given its context set ``C`` (here: the support set), built
from two optional paths and a decoder:

- a *deterministic* path: a representation of C at each target input — the masked mean of
  per-point encodings (CNP, NP) or multi-head cross-attention from the target input to the
  context inputs (ANP);
- a *latent* path: a Gaussian ``q(z | C)`` from a set encoder; the model averages over z;
- a decoder ``[x*, r*, z] -> (mu, sigma)`` with a learned, input-dependent standard deviation
  ``sigma = min_std + (1 - min_std) * softplus(.)``. The lower bound (0.1 in the ANP paper) keeps
  the likelihood from collapsing onto single points early in training; it also caps the best
  attainable log-density at ``-log(min_std sqrt(2 pi e))`` per dimension.

Training (the papers' setup): the target set is the query set plus, by default
(``context_in_target=True``), the context points themselves. Deterministic models minimize the
mean target negative log-likelihood. Latent models maximize the NP ELBO in which the approximate
posterior is conditioned on context *and* targets, with the context-conditioned encoder as the
prior::

    loss_t = -(1/N_t) [ sum_{i in targets} E_{q(z | C u T)} log p(y_i | x_i, C, z)
                        - KL(q(z | C u T) || q(z | C)) ]

with one reparameterized z per task, averaged over tasks. Prediction draws M = ``n_samples``
latents from ``q(z | C)`` and returns the uniform Gaussian mixture ``[M, T, Q, Dy]``
(M = 1 without a latent path).

Masks: hidden context points are left out of every pooled mean and are masked keys in attention,
so padding never reaches a prediction; hidden query points are left out of the loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from bayesmeta._validation import check_positive_int, describe, option_int
from bayesmeta.exceptions import ConfigError, InvalidValueError, ShapeError
from bayesmeta.gaussian import gaussian_log_density
from bayesmeta.inference.base import MetaLearner, StepOutput, TaskPosterior
from bayesmeta.inference.task_noise import task_keys, task_randn, task_seeds
from bayesmeta.models.attention import MultiheadAttention
from bayesmeta.models.set_encoders import (
    DeepSetEncoder,
    GaussianSetEncoder,
    PointwiseMLP,
)
from bayesmeta.predictive import GaussianPredictive
from bayesmeta.tasks.batch import SupportSet, TaskBatch

__all__ = ["NeuralProcess", "NeuralProcessPosterior"]


DeterministicPath = Literal["none", "mean", "attention"]


@dataclass
class NeuralProcessPosterior(TaskPosterior):
    """What a neural process keeps of T context sets.

    Attributes:
        r: ``[T, R]`` mean-pooled deterministic representation (``"mean"`` path), else ``None``.
        keys: ``[T, S, H]`` embedded context inputs (``"attention"`` path), else ``None``.
        values: ``[T, S, R]`` per-point context encodings (``"attention"`` path), else ``None``.
        mask: ``[T, S]`` presence mask of the context (``None``: all present).
        z_mean: ``[T, Dz]`` mean of q(z | C) (latent models), else ``None``.
        z_std: ``[T, Dz]`` standard deviation of q(z | C), else ``None``.
        seeds: one seed per task for the latent draws of ``predict`` (latent models), else
            ``None`` (see :mod:`bayesmeta.inference.task_noise`).
    """

    r: torch.Tensor | None = None
    keys: torch.Tensor | None = None
    values: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    z_mean: torch.Tensor | None = None
    z_std: torch.Tensor | None = None
    seeds: tuple[int, ...] | None = None

    @property
    def n_tasks(self) -> int:
        for t in (self.r, self.values, self.z_mean):
            if t is not None:
                return t.shape[0]
        raise ShapeError("NeuralProcessPosterior: holds no representation")


def _gaussian_kl(m_q: torch.Tensor, s_q: torch.Tensor, m_p: torch.Tensor, s_p: torch.Tensor) -> torch.Tensor:
    """KL(N(m_q, s_q^2) || N(m_p, s_p^2)) for diagonal Gaussians, summed over the last dim."""
    return (torch.log(s_p / s_q) + (s_q**2 + (m_q - m_p) ** 2) / (2.0 * s_p**2) - 0.5).sum(-1)


class NeuralProcess(MetaLearner):
    """Base class of CNP, NP and ANP; configure it through those subclasses.

    Args:
        x_dim: Dx, inputs are ``[T, N, Dx]``.
        y_dim: Dy, targets are ``[T, N, Dy]``.
        hidden: width of every hidden layer.
        r_dim: size of the deterministic representation.
        z_dim: size of the latent (ignored without a latent path).
        encoder_layers: layers of the per-point encoder MLPs.
        decoder_layers: hidden layers of the decoder MLP.
        deterministic: ``"none"``, ``"mean"`` (mean pooling) or ``"attention"`` (cross-attention).
        latent: whether there is a latent path.
        n_heads: attention heads (``"attention"`` path and self-attention).
        self_attention: masked self-attention over the context in the encoders (ANP paper).
        n_samples: M, latent samples in the predictive.
        min_std: lower bound of the predictive standard deviation, in ``[0, 1)``.
        context_in_target: add the context points to the training targets (the papers' setup).
    """

    def __init__(
        self,
        x_dim: int = 1,
        y_dim: int = 1,
        hidden: int = 128,
        r_dim: int = 128,
        z_dim: int = 128,
        encoder_layers: int = 3,
        decoder_layers: int = 2,
        deterministic: DeterministicPath = "mean",
        latent: bool = False,
        n_heads: int = 8,
        self_attention: bool = False,
        n_samples: int = 16,
        min_std: float = 0.1,
        context_in_target: bool = True,
    ) -> None:
        super().__init__("regression")
        self.x_dim = option_int("x_dim", x_dim, 1)
        self.y_dim = option_int("y_dim", y_dim, 1)
        option_int("hidden", hidden, 1)
        option_int("r_dim", r_dim, 1)
        option_int("encoder_layers", encoder_layers, 1)
        option_int("decoder_layers", decoder_layers, 0)
        self.n_samples = option_int("n_samples", n_samples, 1)
        if not 0.0 <= float(min_std) < 1.0:
            raise ConfigError(f"min_std: expected a value in [0, 1), got {min_std!r}")
        if deterministic not in ("none", "mean", "attention"):
            raise ConfigError(
                f"deterministic: expected 'none', 'mean' or 'attention', got {deterministic!r}"
            )
        if deterministic == "none" and not latent:
            raise ConfigError("deterministic='none' needs latent=True: the model would ignore the context")
        self.min_std = float(min_std)
        self.context_in_target = bool(context_in_target)
        self.deterministic: DeterministicPath = deterministic
        self.latent = bool(latent)
        sa_heads = option_int("n_heads", n_heads, 1) if self_attention else 0
        pair = x_dim + y_dim
        enc_sizes = [hidden] * (encoder_layers - 1) + [r_dim]

        self.det_encoder: DeepSetEncoder | None = None
        self.key_encoder: PointwiseMLP | None = None
        self.cross_attention: MultiheadAttention | None = None
        if deterministic != "none":
            self.det_encoder = DeepSetEncoder(pair, enc_sizes, self_attention_heads=sa_heads)
        if deterministic == "attention":
            # ANP's rep="mlp": queries and keys are the target/context inputs through one shared MLP
            self.key_encoder = PointwiseMLP(x_dim, (hidden, hidden))
            self.cross_attention = MultiheadAttention(hidden, hidden, r_dim, option_int("n_heads", n_heads, 1))

        self.latent_encoder: GaussianSetEncoder | None = None
        self.z_dim = 0
        if self.latent:
            self.z_dim = option_int("z_dim", z_dim, 1)
            self.latent_encoder = GaussianSetEncoder(
                pair, [hidden] * encoder_layers, z_dim, min_std=0.1, self_attention_heads=sa_heads
            )

        dec_in = x_dim + (r_dim if deterministic != "none" else 0) + self.z_dim
        self.decoder = PointwiseMLP(dec_in, [hidden] * decoder_layers + [2 * y_dim])

    # ------------------------------------------------------------- checks
    def _check_xy(self, name: str, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        if x.dim() != 3 or x.shape[-1] != self.x_dim:
            raise ShapeError(
                f"{name}_x: expected inputs [T, N, Dx] with Dx = {self.x_dim} (x_dim), got {describe(x)}"
            )
        if y is not None and y.shape[-1] != self.y_dim:
            raise ShapeError(
                f"{name}_y: expected targets [T, N, Dy] with Dy = {self.y_dim} (y_dim), got {describe(y)}"
            )

    # ------------------------------------------------------------- pieces
    def _encode_context(self, ctx: SupportSet) -> NeuralProcessPosterior:
        """The deterministic and latent summaries of the context."""
        pairs = torch.cat([ctx.x, ctx.y], dim=-1)  # [T, S, Dx + Dy]
        post = NeuralProcessPosterior(mask=ctx.mask)
        if self.det_encoder is not None:
            if self.deterministic == "mean":
                post.r = self.det_encoder(pairs, ctx.mask)  # [T, R]
            else:
                assert self.key_encoder is not None
                post.values = self.det_encoder.pointwise(pairs, ctx.mask)  # [T, S, R]
                post.keys = self.key_encoder(ctx.x)  # [T, S, H]
        if self.latent_encoder is not None:
            post.z_mean, post.z_std = self.latent_encoder(pairs, ctx.mask)
        return post

    def _deterministic_at(self, post: NeuralProcessPosterior, x: torch.Tensor) -> torch.Tensor | None:
        """Deterministic representation at the targets, ``[T, Q, R]`` (``None`` without one)."""
        if self.deterministic == "mean":
            assert post.r is not None
            return post.r.unsqueeze(1).expand(-1, x.shape[1], -1)
        if self.deterministic == "attention":
            assert self.key_encoder is not None and self.cross_attention is not None
            assert post.keys is not None and post.values is not None
            return self.cross_attention(self.key_encoder(x), post.keys, post.values, post.mask)
        return None

    def _decode(
        self, post: NeuralProcessPosterior, x: torch.Tensor, z: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predictive mean and variance ``[M, T, Q, Dy]`` at ``x`` ``[T, Q, Dx]``.

        ``z`` is ``[M, T, Dz]`` for latent models (``None`` otherwise, then M = 1).
        """
        m = 1 if z is None else z.shape[0]
        t, q, _ = x.shape
        parts = [x.unsqueeze(0).expand(m, t, q, -1)]
        r = self._deterministic_at(post, x)
        if r is not None:
            parts.append(r.unsqueeze(0).expand(m, -1, -1, -1))
        if z is not None:
            parts.append(z.unsqueeze(2).expand(-1, -1, q, -1))
        out = self.decoder(torch.cat(parts, dim=-1))  # [M, T, Q, 2 Dy]
        mean, raw = out.split(self.y_dim, dim=-1)
        std = self.min_std + (1.0 - self.min_std) * nn.functional.softplus(raw)
        return mean, std**2

    # ---------------------------------------------------------- interface
    def adapt(self, support: SupportSet, generator: torch.Generator | None = None) -> NeuralProcessPosterior:
        """Encode the context set (pure; one forward pass).

        Args:
            support: T context sets.
            generator: source of the one draw that seeds every task's latent samples (torch's
                default generator if ``None``); a task's draws depend on that draw and on its
                own context set only, never on the other tasks in the call.

        Raises:
            ShapeError: a classification set, or x/y with the wrong Dx/Dy.
            InvalidValueError: an empty context set (an all-hidden mask is refused by
                :class:`~bayesmeta.tasks.batch.SupportSet` itself).
        """
        self.check_batch(support, "support")
        self._check_xy("support", support.x, support.y)
        if support.x.shape[1] == 0:
            # SupportSet accepts S = 0; a mean over an empty set would be NaN
            raise InvalidValueError(
                f"support_x: the context set is empty (S = 0 points), got {describe(support.x)}"
            )
        post = self._encode_context(support)
        if self.latent:
            post.seeds = task_seeds(task_keys(support.x, support.y, support.mask), generator)
        return post

    def predict(
        self,
        posterior: NeuralProcessPosterior,
        query_x: torch.Tensor,
        *,
        n_samples: int | None = None,
    ) -> GaussianPredictive:
        """Gaussian (mixture) predictive at ``query_x``.

        Args:
            posterior: from :meth:`adapt`.
            query_x: ``[T, Q, Dx]``.
            n_samples: M for this call (latent models; default ``self.n_samples``). The draws
                are each task's own (seeded by :meth:`adapt`), so repeated calls on one
                posterior reuse them.

        Returns:
            ``GaussianPredictive`` with ``[M, T, Q, Dy]`` means and variances (M = 1 without a
            latent path).
        """
        self.check_query_x(posterior, query_x)
        self._check_xy("query", query_x)
        z = None
        if self.latent:
            assert posterior.z_mean is not None and posterior.z_std is not None
            m = self.n_samples if n_samples is None else check_positive_int("n_samples", n_samples)
            mu, sd = posterior.z_mean, posterior.z_std
            if posterior.seeds is None:
                raise ShapeError("posterior: a latent neural process posterior needs its noise seeds (use adapt())")
            (eps,) = task_randn(posterior.seeds, [(m, mu.shape[-1])], mu.dtype, mu.device)  # [T, M, Dz]
            z = mu.unsqueeze(0) + sd.unsqueeze(0) * eps.movedim(1, 0)  # [M, T, Dz]
        mean, var = self._decode(posterior, query_x, z)
        return GaussianPredictive(mean, var)

    def meta_loss(self, batch: TaskBatch) -> StepOutput:
        """Mean target NLL (deterministic models) or the negative NP ELBO (latent models)."""
        self.check_batch(batch)
        self._check_xy("support", batch.support_x, batch.support_y)
        self._check_xy("query", batch.query_x, batch.query_y)
        joint = batch.joint()
        target = joint if self.context_in_target else batch.query
        post = self.adapt(batch.support)
        z = None
        kl = torch.zeros(batch.n_tasks, dtype=batch.query_x.dtype, device=batch.query_x.device)
        if self.latent_encoder is not None:
            assert post.z_mean is not None and post.z_std is not None
            # the NP papers' posterior: conditioned on context and targets together
            q_mean, q_std = self.latent_encoder(torch.cat([joint.x, joint.y], dim=-1), joint.mask)
            # per-task noise (task_noise): a task's draw does not depend on the rest of the meta-batch
            assert post.seeds is not None
            (eps,) = task_randn(post.seeds, [(q_mean.shape[-1],)], q_mean.dtype, q_mean.device)  # [T, Dz]
            z = (q_mean + q_std * eps).unsqueeze(0)  # [1, T, Dz]
            kl = _gaussian_kl(q_mean, q_std, post.z_mean, post.z_std)  # [T]
        mean, var = self._decode(post, target.x, z)  # [1, T, N, Dy]
        ll = gaussian_log_density(target.y, mean[0], var[0]).sum(-1)  # [T, N]
        if target.mask is None:
            w = torch.ones_like(ll)
        else:
            w = target.mask.to(ll.dtype)
            ll = torch.where(target.mask, ll, torch.zeros_like(ll))
        n = w.sum(1)  # [T] present targets per task
        nll = -(ll * w).sum(1) / n  # [T]
        loss = (nll + kl / n).mean()
        with torch.no_grad():
            se = ((mean[0] - target.y) ** 2).mean(-1)
            metrics = {
                "loss": float(loss),
                "nll": float(nll.mean()),
                "mse": float(((se * w).sum(1) / n).mean()),
            }
            if self.latent:
                metrics["kl"] = float(kl.mean())
        return StepOutput(loss, metrics)
