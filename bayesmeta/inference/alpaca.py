"""ALPaCA (Harrison, Sharma & Pavone 2018): an exact Bayesian linear head on meta-learned features.

The hierarchical model (DESIGN.md section 1) with a conjugate last layer:

    phi(x) in R^D'           meta-learned features (the backbone's ``features``, plus a constant 1
                             when ``bias=True``, so D' = D + 1)
    K_t[:, j] ~ N(k0_j, sigma_j^2 Lambda0^{-1})      one Gaussian per output j (prior shared by tasks)
    y_j | x, K_t ~ N(phi(x)^T K_t[:, j], sigma_j^2)

Meta-parameters theta: the backbone, the prior mean ``K0`` ``[D', Dy]``, the prior precision
``Lambda0 = L0 L0^T`` (``L0`` lower triangular with a positive diagonal) and the per-output noise
standard deviations ``sigma``. This is ALPaCA's matrix-normal prior ``MN(K0, Lambda0^{-1},
Sigma)`` with a diagonal noise covariance ``Sigma = diag(sigma^2)``: the outputs share the
feature precision and are independent given the features (the paper allows a full ``Sigma``;
with a diagonal one every output's predictive is a univariate Gaussian, which is what
:class:`~bayesmeta.predictive.GaussianPredictive` holds).

Adaptation is exact conjugate Bayesian linear regression on the task's present support points
(``Phi`` ``[S, D']``, ``Y`` ``[S, Dy]``):

    Lambda_t = Lambda0 + Phi^T Phi,      K_t = Lambda_t^{-1} (Lambda0 K0 + Phi^T Y),

and the posterior predictive at a query point is Gaussian per output,

    y_j ~ N(phi^T K_t[:, j],  sigma_j^2 (1 + phi^T Lambda_t^{-1} phi)).

Meta-training minimizes the query points' negative log posterior predictive density (per point
and output dimension), which backpropagates through the Cholesky solves into every
meta-parameter. Regression only: for a categorical likelihood the posterior over the head is not
Gaussian and no exact closed form exists (an approximation, a Laplace or a variational head, is
what VERSA offers instead).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from bayesmeta._validation import describe, option_float, option_int
from bayesmeta.exceptions import ConfigError, NumericalError, ShapeError
from bayesmeta.gaussian import gaussian_log_density
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
from bayesmeta.predictive import GaussianPredictive
from bayesmeta.tasks.batch import SupportSet, TaskBatch

__all__ = ["ALPaCA", "ALPaCAPosterior"]

@dataclass
class ALPaCAPosterior(TaskPosterior):
    """The exact Gaussian posterior over every task's linear head.

    Attributes:
        mean: ``[T, D', Dy]`` posterior mean ``K_t``.
        precision_chol: ``[T, D', D']`` lower Cholesky factor of the posterior precision
            ``Lambda_t``.
        support_x: ``[T, S, ...]`` support inputs, kept when the backbone normalizes queries with
            their task's support statistics (``context_mode == "support"``), else ``None``.
        support_mask: ``[T, S]`` bool or ``None``.
    """

    mean: torch.Tensor
    precision_chol: torch.Tensor
    support_x: torch.Tensor | None = None
    support_mask: torch.Tensor | None = None

    @property
    def n_tasks(self) -> int:
        return self.mean.shape[0]

    def covariance(self) -> torch.Tensor:
        """``Lambda_t^{-1}`` ``[T, D', D']`` (the head's covariance is ``sigma_j^2`` times it)."""
        return torch.cholesky_inverse(self.precision_chol)


class ALPaCA(MetaLearner):
    """Bayesian last layer with a learned conjugate Gaussian prior (regression).

    Args:
        backbone: maps ``[N, *features]`` to features ``[N, D]`` (``features()`` is used when it
            has one, so an :class:`~bayesmeta.models.MLP` with a head works; its head then gets
            no gradient, so build it with ``out_features=None``).
        y_dim: Dy, the number of regression outputs.
        feature_dim: D when the backbone has no ``feature_dim`` attribute.
        bias: append a constant feature (a Bayesian bias per output).
        prior_precision: initial ``Lambda0 = prior_precision * I``, > 0.
        noise_init: initial noise standard deviation of every output, > 0.

    Shapes:
        ``adapt``: support ``[T, S, ...]`` -> :class:`ALPaCAPosterior` (``[T, D', Dy]`` mean).
        ``predict``: query_x ``[T, Q, ...]`` -> :class:`GaussianPredictive` with M = 1.

    Raises:
        ConfigError: an option out of range, or a backbone without ``feature_dim``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        y_dim: int = 1,
        feature_dim: int | None = None,
        bias: bool = True,
        prior_precision: float = 1.0,
        noise_init: float = 1.0,
    ) -> None:
        super().__init__("regression")
        if not isinstance(backbone, nn.Module):
            raise ConfigError(f"backbone: expected a torch.nn.Module, got {type(backbone).__name__}")
        d = feature_dim if feature_dim is not None else getattr(backbone, "feature_dim", None)
        if d is None:
            raise ConfigError("feature_dim: the backbone has no feature_dim attribute; pass feature_dim=")
        if not isinstance(bias, bool):
            raise ConfigError(f"bias: expected a bool, got {bias!r}")
        self.backbone = backbone
        self.feature_dim = option_int("feature_dim", d, 1)
        self.y_dim = option_int("y_dim", y_dim, 1)
        self.bias = bias
        dp = self.feature_dim + int(bias)
        ref = next(backbone.parameters(), torch.zeros(()))
        kw = {"dtype": ref.dtype, "device": ref.device}
        #: K0, the prior mean of the head, ``[D', Dy]``
        self.prior_mean = nn.Parameter(torch.zeros(dp, self.y_dim, **kw))
        # Lambda0 = L0 L0^T: strictly lower part free, diagonal exp(log_diag) > 0
        self.prior_chol_offdiag = nn.Parameter(torch.zeros(dp, dp, **kw))
        self.prior_chol_log_diag = nn.Parameter(
            torch.full((dp,), 0.5 * math.log(option_float("prior_precision", prior_precision)), **kw)
        )
        self.log_noise = nn.Parameter(torch.full((self.y_dim,), math.log(option_float("noise_init", noise_init)), **kw))

    # ------------------------------------------------------------ internals
    def prior_precision_chol(self) -> torch.Tensor:
        """``L0`` ``[D', D']``: lower triangular, positive diagonal, ``Lambda0 = L0 L0^T``."""
        return torch.tril(self.prior_chol_offdiag, -1) + torch.diag(self.prior_chol_log_diag.exp())

    def noise_variance(self) -> torch.Tensor:
        """``sigma^2`` per output, ``[Dy]``."""
        return torch.exp(2.0 * self.log_noise)

    def _features_fn(self, x: torch.Tensor, context_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Head inputs ``phi`` of ``[T, N, *features]`` inputs, ``[T, N, D']``."""
        f = set_features(self.backbone, x, context_mask)
        if f.shape != (*x.shape[:2], self.feature_dim):
            raise ShapeError(
                f"backbone: expected features {[*x.shape[:2], self.feature_dim]} (feature_dim), got {describe(f)}"
            )
        if self.bias:
            f = torch.cat([f, torch.ones_like(f[..., :1])], -1)
        return f

    def _check_y(self, y: torch.Tensor, name: str) -> None:
        if y.shape[-1] != self.y_dim:
            raise ShapeError(f"{name}: expected Dy = {self.y_dim} outputs (y_dim), got {describe(y)}")

    def _condition(self, phi: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean ``[T, D', Dy]`` and precision Cholesky ``[T, D', D']`` from features ``[T, S, D']``."""
        if mask is not None:
            # absent points contribute nothing: zero their rows (not 0 * possible garbage)
            keep = mask.unsqueeze(-1)
            phi = torch.where(keep, phi, torch.zeros((), dtype=phi.dtype, device=phi.device))
            y = torch.where(keep, y, torch.zeros((), dtype=y.dtype, device=y.device))
        l0 = self.prior_precision_chol()
        lam0 = l0 @ l0.mT
        lam = lam0 + phi.mT @ phi  # [T, D', D']
        chol, info = torch.linalg.cholesky_ex(lam)
        if bool((info != 0).any()):
            bad = (info != 0).nonzero().flatten().tolist()
            raise NumericalError(
                f"posterior precision: not positive definite for task(s) {bad[:10]} (Cholesky failed); "
                f"the features or the prior precision are not finite or are badly scaled"
            )
        rhs = lam0 @ self.prior_mean + phi.mT @ y  # [T, D', Dy]
        return torch.cholesky_solve(rhs, chol), chol

    def _moments(self, mean: torch.Tensor, chol: torch.Tensor, phi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predictive mean and variance ``[T, Q, Dy]`` at features ``[T, Q, D']``."""
        loc = phi @ mean
        v = torch.linalg.solve_triangular(chol, phi.mT, upper=False)  # [T, D', Q]
        quad = (v**2).sum(-2)  # phi^T Lambda^{-1} phi, [T, Q]
        var = (1.0 + quad).unsqueeze(-1) * self.noise_variance()
        return loc, var

    # ------------------------------------------------------------ interface
    def adapt(self, support: SupportSet) -> ALPaCAPosterior:
        """Exact posterior over every task's head (pure: one forward pass and a Cholesky per task)."""
        self.check_batch(support, "support")
        check_input_shape(self.backbone, support.x, "support_x")
        self._check_y(support.y, "support_y")
        phi = support_forward(self._features_fn, self.backbone, support.x, support.mask, set_dim=1)
        mean, chol = self._condition(phi, support.y, support.mask)
        return ALPaCAPosterior(mean, chol, *kept_context(self.backbone, support.x, support.mask))

    def predict(self, posterior: ALPaCAPosterior, query_x: torch.Tensor) -> GaussianPredictive:
        """Gaussian posterior predictive at ``query_x`` ``[T, Q, ...]``, M = 1."""
        if not isinstance(posterior, ALPaCAPosterior):
            raise ShapeError(f"posterior: expected an ALPaCAPosterior, got {type(posterior).__name__}")
        self.check_query_x(posterior, query_x)
        check_input_shape(self.backbone, query_x, "query_x")
        phi = query_forward(self._features_fn, self.backbone, query_x, posterior.support_x, posterior.support_mask, set_dim=1)
        loc, var = self._moments(posterior.mean, posterior.precision_chol, phi)
        return GaussianPredictive(loc.unsqueeze(0), var.unsqueeze(0))

    def meta_loss(self, batch: TaskBatch) -> StepOutput:
        """Negative log posterior predictive density of the query points, per point and output.

        Args:
            batch: T regression tasks.

        Returns:
            ``loss`` and diagnostics ``nll``, ``mse``, ``noise_std`` (mean over outputs).
        """
        self.check_batch(batch)
        check_input_shape(self.backbone, batch.support_x, "support_x")
        check_input_shape(self.backbone, batch.query_x, "query_x")
        self._check_y(batch.support_y, "support_y")
        self._check_y(batch.query_y, "query_y")
        fs, fq = joint_forward(
            self._features_fn, self.backbone, batch.support_x, batch.support_mask, batch.query_x, 1, batch.query_mask
        )
        mean, chol = self._condition(fs, batch.support_y, batch.support_mask)
        loc, var = self._moments(mean, chol, fq)
        nll = -gaussian_log_density(batch.query_y, loc, var).mean(-1)  # [T, Q]
        loss = masked_mean(nll, batch.query_mask)
        mse = masked_mean(((batch.query_y - loc) ** 2).mean(-1), batch.query_mask).detach()
        return StepOutput(
            loss,
            {"loss": float(loss.detach()), "nll": float(loss.detach()), "mse": float(mse),
             "noise_std": float(self.log_noise.detach().exp().mean())},
        )

    def extra_repr(self) -> str:
        return f"feature_dim={self.feature_dim}, y_dim={self.y_dim}, bias={self.bias}"
