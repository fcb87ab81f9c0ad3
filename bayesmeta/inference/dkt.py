"""Deep Kernel Transfer (Patacchiola, Turner, Crowley, O'Boyle and Storkey, NeurIPS 2020).

The hierarchical model of DESIGN.md section 1 with a conjugate inner step:

    theta = (feature extractor g_w, kernel hyperparameters, mean constant, noise)
    f_t ~ GP(m, k_theta),   k_theta(x, x') = k_base(g_w(x), g_w(x'))     one function per task
    y = f_t(x) + eps,       eps ~ N(0, sigma^2)

- **Meta-training** maximizes each task's exact log marginal likelihood
  ``log N(y | m, K + sigma^2 I)`` on the task's support *and* query points together (as in the
  reference implementation, which fits the GP to all the points sampled for a training task);
  the loss is the negative marginal log likelihood per data point (GPyTorch's
  ``ExactMarginalLogLikelihood`` normalization), averaged over tasks.
- **Adaptation** is the exact GP posterior on the support set: a Cholesky factor of
  ``K_ss + sigma^2 I`` and ``alpha = (K_ss + sigma^2 I)^{-1} (y_s - m)``. Nothing is fitted.
- **Prediction** is Gaussian: mean ``m + K_qs alpha``, variance ``k_qq - K_qs (K_ss + sigma^2
  I)^{-1} K_sq + sigma^2`` (the GP's variance plus the likelihood noise).

Why the posterior is computed here and not with ``gpytorch.models.ExactGP``: ``ExactGP`` stores
the training data on the module (``set_train_data``) and caches a prediction strategy, i.e.
adaptation would mutate the learner, and its Cholesky path raises ``NotPSDError`` on
near-singular kernels (a known failure of the reference code on newer GPyTorch). GPyTorch is
still used for what it is good at -- the kernels, the constrained noise and the constant mean --
and the linear algebra is a batched Cholesky over tasks, ``[T, N, N]``, with per-task jitter
escalation (:func:`robust_cholesky`).

Batching: kernels are evaluated on ``[T, N, F]`` features (GPyTorch kernels broadcast over the
leading task dimension), so all tasks share one kernel call and one batched Cholesky; there is
no Python loop over tasks. Outputs (``Dy > 1`` regression targets, or the C one-vs-rest
classifiers) are independent GPs that share the kernel and noise, so they share the Cholesky
factor too and enter as extra right-hand sides.

Classification follows the paper: one GP per class on +-1 targets (+1 for the class, -1 for
the others), i.e. C one-vs-rest regressions per task; their marginal likelihoods are summed.
The class scores become probabilities in one of three documented ways (``class_probs``):

- ``"max"`` (default): the probability that class c's latent GP score is the largest,
  ``P(c) = P(f_c > f_j for all j != c)`` with independent ``f_j ~ N(mu_j, s^2)``. All C GPs share
  the kernel, noise and inputs, hence one latent variance ``s^2`` per query point, so
  ``P(c) = E_{z ~ N(0,1)} prod_{j != c} Phi(z + (mu_c - mu_j) / s)``; the expectation is a
  Gauss-Hermite quadrature (deterministic and differentiable). The predicted class is the argmax
  of the means, exactly the paper's decision rule, and the probability softens with the GP's
  posterior variance (large far from the support set in feature space).
- ``"max_noisy"``: the same with the noisy outputs ``y_c = f_c + eps`` (variance ``s^2 +
  sigma^2``): the noise of the +-1 encoding makes it less confident. On Omniglot 5-way 1-shot
  both are under-confident, ``"max"`` less so (docs/dkt.md).
- ``"softmax"``: ``softmax(mu / temperature)``, ignoring the variance.

**A learned temperature (``learn_temperature=True``, the default for classification).** The
one-vs-rest +-1 regression is not a classification likelihood: its marginal likelihood has no term
that rewards confident, correct class probabilities, so whatever ``class_probs`` makes of the
scores, the confidence is fixed by the kernel and the noise of the +-1 encoding, and on Omniglot it
is under-confident (pooled ECE 0.095 against ProtoNets' 0.018, docs/dkt.md). The class
log-probabilities are therefore divided by a temperature ``T`` (one scalar, ``log T`` a
meta-parameter) and the meta-objective gains the query set's negative log-likelihood under the
support-only posterior predictive, ``-mean log softmax(log p(c | support) / T)[y]``: the
predictive that will be used at test time, scored by a proper scoring rule on points it did not
condition on. Its gradient reaches ``T`` only (the features, kernel and noise are detached in that
term), so the GP is still fitted by its marginal likelihood as in the paper, the predicted class
never changes (``T > 0`` keeps the order), and ``T`` is what temperature scaling on validation
tasks would fit, learned on the training tasks during meta-training.

Masks: padded points (``mask == False``) are removed exactly, not approximately: their rows and
columns of the kernel matrix are replaced by the identity and their residuals by zero, which
decouples them from the solve, and their log-determinant and ``n`` terms are left out.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import nn

from bayesmeta._validation import check_finite, describe
from bayesmeta.exceptions import ConfigError, InvalidValueError, NumericalError, ShapeError

# re-exported: they lived here before GP conditioning moved to the ground-floor bayesmeta.gaussian
from bayesmeta.gaussian import CholeskyJitterWarning, gp_condition, gp_predict, robust_cholesky
from bayesmeta.inference.base import MetaLearner, StepOutput, TaskKind, TaskPosterior
from bayesmeta.masked import masked_mean
from bayesmeta.models.context import context_mode, joint_forward, query_forward, support_forward
from bayesmeta.models.kernels import DeepKernel, KernelName, make_base_kernel
from bayesmeta.predictive import CategoricalPredictive, GaussianPredictive
from bayesmeta.tasks.batch import SupportSet, TaskBatch

if TYPE_CHECKING:
    import gpytorch

__all__ = [
    "DKT",
    "DKTPosterior",
    "CholeskyJitterWarning",
    "robust_cholesky",
    "gp_condition",
    "one_vs_rest_targets",
    "max_class_probs",
]



# ------------------------------------------------------------------------------- posterior
@dataclass(frozen=True)
class DKTPosterior(TaskPosterior):
    """Exact GP posterior of T tasks given their support sets.

    Attributes:
        features: ``[T, S, F]`` support features ``g_w(x_s)``.
        targets: ``[T, S, D]`` GP targets (regression ``y``, or +-1 one-vs-rest labels with
            ``D = C``).
        mask: ``[T, S]`` bool (True = present) or ``None``.
        chol: ``[T, S, S]`` lower Cholesky factor of ``K_ss + sigma^2 I`` (padding decoupled).
        alpha: ``[T, S, D]`` ``(K_ss + sigma^2 I)^{-1} (y_s - m(x_s))`` (zero at padding).
        noise: scalar tensor, the likelihood noise variance ``sigma^2``.
        jitter: ``[T]`` relative jitter that the Cholesky needed (0 if none).
        log_marginal: ``[T]`` log marginal likelihood of the support targets (summed over D).
        input_shape: the feature shape of one input point (``x.shape[2:]``).
        n_way: C for classification, ``None`` for regression.
        support_x: ``[T, S, *input]`` support inputs, kept when the backbone normalizes queries
            with their task's support statistics (``context_mode == "support"``), else ``None``.
    """

    features: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor | None
    chol: torch.Tensor
    alpha: torch.Tensor
    noise: torch.Tensor
    jitter: torch.Tensor
    log_marginal: torch.Tensor
    input_shape: tuple[int, ...]
    n_way: int | None = None
    support_x: torch.Tensor | None = None

    @property
    def n_tasks(self) -> int:
        """T."""
        return self.features.shape[0]


def one_vs_rest_targets(y: torch.Tensor, n_way: int, dtype: torch.dtype) -> torch.Tensor:
    """Class indices ``[T, N]`` to the paper's one-vs-rest GP targets ``[T, N, C]`` in {-1, +1}."""
    return 2.0 * nn.functional.one_hot(y, n_way).to(dtype) - 1.0


def max_class_probs(mean: torch.Tensor, variance: torch.Tensor, n_nodes: int = 32) -> torch.Tensor:
    """Log-probability that each class's Gaussian score is the largest.

    With independent scores ``y_c ~ N(mu_c, s^2)`` sharing one variance per point,
    ``P(c) = E_{z ~ N(0, 1)} prod_{j != c} Phi(z + (mu_c - mu_j) / s)``, computed by
    ``n_nodes``-point Gauss-Hermite quadrature in log space (deterministic, differentiable).

    Args:
        mean: ``[..., C]`` score means.
        variance: ``[...]`` shared score variance, positive.
        n_nodes: quadrature nodes.

    Returns:
        ``[..., C]`` log-probabilities (normalized; the quadrature error is renormalized away).
    """
    nodes_np, weights_np = np.polynomial.hermite_e.hermegauss(n_nodes)
    nodes = torch.as_tensor(nodes_np, dtype=mean.dtype, device=mean.device)  # [K]
    log_w = torch.as_tensor(np.log(weights_np / math.sqrt(2.0 * math.pi)), dtype=mean.dtype, device=mean.device)
    c = mean.shape[-1]
    sd = variance.sqrt().unsqueeze(-1).unsqueeze(-1)  # [..., 1, 1]
    diff = (mean.unsqueeze(-1) - mean.unsqueeze(-2)) / sd  # [..., C(c), C(j)]
    log_phi = torch.special.log_ndtr(diff.unsqueeze(-1) + nodes)  # [..., C, C, K]
    off_diag = ~torch.eye(c, dtype=torch.bool, device=mean.device)
    log_phi = log_phi * off_diag.unsqueeze(-1).to(log_phi.dtype)  # j == c contributes log 1 = 0
    log_p = torch.logsumexp(log_phi.sum(-2) + log_w, dim=-1)  # [..., C]
    return torch.log_softmax(log_p, dim=-1)


# --------------------------------------------------------------------------------- learner
class DKT(MetaLearner):
    """Deep Kernel Transfer: a meta-learned deep kernel with an exact GP per task.

    Args:
        backbone: feature extractor, applied to the flattened points ``[T * N, *input]`` and
            returning ``[T * N, F]``; ``backbone.features`` is used when present (so an
            ``MLP``/``Conv4`` head is ignored), else ``backbone(x)``.
        kernel: ``"rbf"`` (scaled RBF) or ``"spectral"`` (spectral mixture, one frequency per
            feature dimension).
        n_mixtures: spectral mixture components.
        task_kind: ``"regression"``, ``"classification"`` (one-vs-rest GPs on +-1 targets),
            or ``None`` to take the kind from each batch (``n_way`` set or not).
        n_way: C for classification; optional (taken from the batches), checked when given.
        noise_init: initial likelihood noise variance ``sigma^2``.
        learn_noise: learn ``sigma^2`` (the paper fixes it at 0.1 for classification).
        min_noise: lower bound of ``sigma^2`` (GPyTorch's ``GreaterThan`` constraint).
        mean: ``"constant"`` (a learned constant, as the reference) or ``"zero"``.
        ard: one RBF lengthscale per feature dimension.
        feature_dim: F; read from ``backbone.feature_dim`` when omitted.
        class_probs: ``"max"``, ``"max_noisy"`` or ``"softmax"``: how the one-vs-rest scores
            become probabilities (see the module docstring).
        temperature: temperature ``T`` dividing the class log-probabilities (the softmax
            temperature for ``class_probs="softmax"``); the initial value when learned.
        learn_temperature: learn ``T`` by the query NLL of the support-only predictive (see the
            module docstring); only a DKT built with ``task_kind="classification"`` has the
            parameter ``log_temperature`` (else ``temperature`` stays fixed).
        max_jitter: largest relative Cholesky jitter tried before :class:`NumericalError`.

    Shapes:
        ``adapt``: support ``x [T, S, *input]``, ``y [T, S, Dy]`` or ``[T, S]`` class indices.
        ``predict``: ``query_x [T, Q, *input]`` -> ``GaussianPredictive`` with mean/variance
        ``[1, T, Q, Dy]``, or ``CategoricalPredictive`` ``[1, T, Q, C]``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        kernel: KernelName = "rbf",
        n_mixtures: int = 4,
        task_kind: TaskKind | None = None,
        n_way: int | None = None,
        noise_init: float = 0.1,
        learn_noise: bool = True,
        min_noise: float = 1e-4,
        mean: Literal["constant", "zero"] = "constant",
        ard: bool = False,
        feature_dim: int | None = None,
        class_probs: Literal["max", "max_noisy", "softmax"] = "max",
        temperature: float = 1.0,
        max_jitter: float = 1e-1,
        learn_temperature: bool = True,
    ) -> None:
        super().__init__(task_kind)
        if not isinstance(backbone, nn.Module):
            raise ConfigError(f"backbone: expected an nn.Module, got {type(backbone).__name__}")
        fdim = feature_dim if feature_dim is not None else getattr(backbone, "feature_dim", None)
        if fdim is None:
            raise ConfigError(
                "feature_dim: the backbone has no `feature_dim` attribute; pass feature_dim= "
                "(the size of the features the kernel sees)"
            )
        if not (min_noise >= 0.0 and noise_init > min_noise):
            raise ConfigError(
                f"noise_init: expected noise_init > min_noise >= 0, got noise_init={noise_init!r}, "
                f"min_noise={min_noise!r}"
            )
        if mean not in ("constant", "zero"):
            raise ConfigError(f"mean: expected 'constant' or 'zero', got {mean!r}")
        if class_probs not in ("max", "max_noisy", "softmax"):
            raise ConfigError(f"class_probs: expected 'max', 'max_noisy' or 'softmax', got {class_probs!r}")
        if not temperature > 0:
            raise ConfigError(f"temperature: expected a positive value, got {temperature!r}")
        if not 0 < max_jitter < 1e3:
            raise ConfigError(f"max_jitter: expected a value in (0, 1000), got {max_jitter!r}")
        if n_way is not None and (task_kind == "regression" or isinstance(n_way, bool) or int(n_way) < 2):
            raise ConfigError(f"n_way: expected an integer >= 2 for a classification DKT, got {n_way!r}")
        self.kernel_name = kernel
        self.feature_dim = int(fdim)
        self.deep_kernel = DeepKernel(backbone, make_base_kernel(kernel, self.feature_dim, n_mixtures, ard))
        import gpytorch  # here, not at module level: `import bayesmeta` must not load GPyTorch

        self.likelihood = gpytorch.likelihoods.GaussianLikelihood(
            noise_constraint=gpytorch.constraints.GreaterThan(min_noise)
        )
        self.likelihood.noise = torch.tensor(noise_init)
        self.likelihood.noise_covar.raw_noise.requires_grad_(learn_noise)
        self.mean_module: gpytorch.means.Mean = (
            gpytorch.means.ConstantMean() if mean == "constant" else gpytorch.means.ZeroMean()
        )
        self.n_way = n_way
        self.class_probs = class_probs
        self.temperature = float(temperature)
        self.max_jitter = float(max_jitter)
        if not isinstance(learn_temperature, bool):
            raise ConfigError(f"learn_temperature: expected true or false, got {learn_temperature!r}")
        # only a DKT built for classification has the parameter (a regression DKT, or one whose
        # kind is decided per batch, keeps the fixed ``temperature``): no parameter without gradient
        self.log_temperature: nn.Parameter | None = (
            nn.Parameter(torch.tensor(math.log(self.temperature)))
            if learn_temperature and task_kind == "classification"
            else None
        )

    # ---------------------------------------------------------------- pieces
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):  # type: ignore[no-untyped-def]
        # checkpoints written before the learned temperature existed hold no log_temperature:
        # they load with the configured initial temperature, i.e. exactly their old predictions
        key = prefix + "log_temperature"
        if self.log_temperature is not None and key not in state_dict:
            state_dict[key] = self.log_temperature.detach().clone()
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

    def class_temperature(self) -> torch.Tensor | float:
        """``T``, dividing the class log-probabilities: a scalar tensor when learned, else a float."""
        return self.log_temperature.exp() if self.log_temperature is not None else self.temperature

    def _class_logits(self, mean: torch.Tensor, var_f: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Class log-probabilities ``[T, Q, C]`` at temperature 1 (see ``class_probs``)."""
        if self.class_probs == "softmax":
            return torch.log_softmax(mean, dim=-1)
        # the latent variance vanishes at a query equal to a support point: floor it so that
        # (mu_c - mu_j) / s stays finite (ties give 0 / s = 0, the right limit)
        var = (var_f + noise).clamp_min(1e-12) if self.class_probs == "max_noisy" else var_f.clamp_min(1e-10)
        return max_class_probs(mean, var)

    @property
    def backbone(self) -> nn.Module:
        """The feature extractor."""
        return self.deep_kernel.feature_extractor

    @property
    def noise(self) -> torch.Tensor:
        """Likelihood noise variance ``sigma^2`` (scalar tensor)."""
        return self.likelihood.noise.reshape(())

    def _features(self, x: torch.Tensor, name: str, context_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Features ``[T, N, F]`` of inputs ``[T, N, *input]``, checked (``context_mask``: see
        :meth:`~bayesmeta.models.kernels.DeepKernel.features`)."""
        ref = self.noise
        if x.dtype != ref.dtype:
            raise InvalidValueError(
                f"{name}: expected dtype {str(ref.dtype).removeprefix('torch.')} to match the "
                f"learner's parameters, got {describe(x)} (cast the batch or the learner)"
            )
        z = self.deep_kernel.features(x, name, context_mask)
        if z.shape[-1] != self.feature_dim:
            raise ShapeError(
                f"{name}: the backbone produced features of size {z.shape[-1]}, but the kernel was "
                f"built for feature_dim = {self.feature_dim} (got {describe(z)})"
            )
        if not bool(torch.isfinite(z).all()):
            raise NumericalError(f"{name}: the backbone produced NaN/Inf features ({describe(z)})")
        return z

    def _targets(self, s: SupportSet) -> torch.Tensor:
        """GP targets ``[T, N, D]``: regression y, or one-vs-rest +-1 labels."""
        if s.n_way is None:
            return s.y
        return one_vs_rest_targets(s.y, s.n_way, self.noise.dtype)

    def _check_support(self, support: SupportSet, name: str) -> None:
        if not isinstance(support, SupportSet):
            raise ShapeError(f"{name}: expected a SupportSet, got {type(support).__name__}")
        self.check_batch(support, name)
        # SupportSet validates at construction, but its tensors can be edited in place after;
        # this is the last point before NaNs would turn into an opaque Cholesky failure.
        check_finite(f"{name}.x", support.x)
        if support.n_way is None:
            check_finite(f"{name}.y", support.y)
        if self.n_way is not None and support.n_way != self.n_way:
            raise ShapeError(f"{name}: expected n_way = {self.n_way} as configured, got n_way = {support.n_way}")

    def _condition(self, z: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None) -> tuple[
        torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor
    ]:
        k = self.deep_kernel.covariance(z, z)  # [T, N, N]
        m = self.mean_module(z)  # [T, N]
        return gp_condition(k, m, targets, self.noise, mask, self.max_jitter, name="DKT kernel matrix K + noise*I")

    def _posterior_from_features(
        self, z: torch.Tensor, support: SupportSet, targets: torch.Tensor
    ) -> DKTPosterior:
        chol, alpha, log_marginal, jitter = self._condition(z, targets, support.mask)
        return DKTPosterior(
            features=z,
            targets=targets,
            mask=support.mask,
            chol=chol,
            alpha=alpha,
            noise=self.noise,
            jitter=jitter,
            log_marginal=log_marginal,
            input_shape=tuple(support.x.shape[2:]),
            n_way=support.n_way,
        )

    def _latent(self, posterior: DKTPosterior, z_q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent predictive: mean ``[T, Q, D]`` and variance ``[T, Q]`` (no noise)."""
        k_qs = self.deep_kernel.covariance(z_q, posterior.features)  # [T, Q, S]
        mean, var = gp_predict(posterior.chol, posterior.alpha, k_qs, self.deep_kernel.variance(z_q), posterior.mask)
        return self.mean_module(z_q).unsqueeze(-1) + mean, var  # [T, Q, D], [T, Q]

    def _query_features(self, posterior: TaskPosterior, query_x: torch.Tensor) -> torch.Tensor:
        if not isinstance(posterior, DKTPosterior):
            raise ShapeError(f"posterior: expected a DKTPosterior, got {type(posterior).__name__}")
        self.check_query_x(posterior, query_x)
        if tuple(query_x.shape[2:]) != posterior.input_shape:
            raise ShapeError(
                f"query_x: expected input shape {list(posterior.input_shape)} per point to match "
                f"the support set, got {describe(query_x)}"
            )
        check_finite("query_x", query_x)
        fe = self.deep_kernel.feature_extractor
        return query_forward(
            lambda x, context_mask=None: self._features(x, "query_x", context_mask),
            fe, query_x, posterior.support_x, posterior.mask, set_dim=1,
        )

    def _to_predictive(
        self, posterior: DKTPosterior, mean: torch.Tensor, var_f: torch.Tensor
    ) -> GaussianPredictive | CategoricalPredictive:
        # [T, Q]: GP variance plus likelihood noise; the floor only matters if min_noise = 0
        var_y = (var_f + posterior.noise).clamp_min(1e-12)
        if posterior.n_way is None:
            return GaussianPredictive(mean.unsqueeze(0), var_y.unsqueeze(-1).expand_as(mean).unsqueeze(0))
        if self.class_probs == "softmax":  # softmax(mu / T), as before the temperature could be learned
            return CategoricalPredictive(logits=(mean / self.class_temperature()).unsqueeze(0))
        logits = self._class_logits(mean, var_f, posterior.noise) / self.class_temperature()
        return CategoricalPredictive(logits=torch.log_softmax(logits, dim=-1).unsqueeze(0))

    # ------------------------------------------------------------- interface
    def meta_loss(self, batch: TaskBatch) -> StepOutput:
        """Negative log marginal likelihood per point of each task's support + query data.

        Returns:
            ``loss``: ``-mean_t [ log p(y_t | x_t) / n_t ]`` (summed over the D outputs), with the
            graph to the backbone, kernel hyperparameters, mean and noise. ``metrics``:
            ``mll`` (per point), ``noise``, ``jitter`` (largest relative jitter used), and the
            query ``mse`` (regression) or ``accuracy`` (classification) of the support-only
            posterior, computed without gradient from the same features. With a learned
            temperature (classification), the loss adds ``query_nll``, the mean query NLL of the
            support-only predictive at temperature ``T`` (gradient to ``T`` only), and the metrics
            report it and ``temperature``.
        """
        if not isinstance(batch, TaskBatch):
            raise ShapeError(f"batch: expected a TaskBatch, got {type(batch).__name__}")
        self.check_batch(batch)
        joint = batch.joint()
        self._check_support(joint, "batch")
        fe = self.deep_kernel.feature_extractor
        if context_mode(fe) is None:
            z = self._features(joint.x, "batch.support_x/query_x")  # [T, S + Q, F]
        else:
            # the features the posterior will see at test time: queries normalized with their
            # task's support set (or, transductively, with their own query set)
            zs, zq = joint_forward(
                lambda x, context_mask=None: self._features(x, "batch.support_x/query_x", context_mask),
                fe, batch.support_x, batch.support_mask, batch.query_x, 1, batch.query_mask,
            )
            z = torch.cat([zs, zq], dim=1)
        targets = self._targets(joint)  # [T, S + Q, D]
        _, _, log_marginal, jitter = self._condition(z, targets, joint.mask)
        n = (
            torch.full_like(log_marginal, float(z.shape[1]))
            if joint.mask is None
            else joint.mask.sum(-1).to(log_marginal.dtype)
        )
        mll = log_marginal / n  # [T]
        loss = -mll.mean()
        metrics = {
            "mll": float(mll.mean().detach()),
            "noise": float(self.noise.detach()),
            "jitter": float(jitter.max()) if jitter.numel() else 0.0,
        }
        with torch.no_grad():
            s = batch.support_x.shape[1]
            support = batch.support
            post = self._posterior_from_features(z[:, :s].detach(), support, targets[:, :s])
            mean, var_f = self._latent(post, z[:, s:].detach())
            qmask = batch.query_mask
            if batch.n_way is None:
                err = ((mean - batch.query_y) ** 2).mean(-1)
            else:
                err = (mean.argmax(-1) == batch.query_y).to(mean.dtype)
            key = "mse" if batch.n_way is None else "accuracy"
            metrics[key] = float(masked_mean(err, qmask))
        if batch.n_way is not None and self.log_temperature is not None:
            # the test-time predictive (support-only posterior) scored on the query points; its
            # gradient reaches the temperature only: everything else above is detached
            base = mean if self.class_probs == "softmax" else self._class_logits(mean, var_f, post.noise)
            lp = torch.log_softmax(base / self.class_temperature(), dim=-1)  # [T, Q, C]
            q_nll = masked_mean(-lp.gather(-1, batch.query_y.unsqueeze(-1)).squeeze(-1), qmask)  # mean over [T, Q]
            loss = loss + q_nll
            metrics["query_nll"] = float(q_nll.detach())
            metrics["temperature"] = float(self.class_temperature().detach())  # type: ignore[union-attr]
        return StepOutput(loss=loss, metrics=metrics)

    def adapt(self, support: SupportSet) -> DKTPosterior:
        """Exact GP posterior on each task's support set (pure: nothing on the module changes).

        Args:
            support: ``x [T, S, *input]``; ``y [T, S, Dy]`` float or ``[T, S]`` class indices.

        Returns:
            A :class:`DKTPosterior` holding the support features, the Cholesky factor and
            ``alpha`` for every task.

        Raises:
            ShapeError: wrong task kind or container; InvalidValueError: NaN/Inf inputs or a
            dtype that differs from the learner's; NumericalError: unrecoverable Cholesky failure.

        Warns:
            CholeskyJitterWarning: the kernel matrix needed jitter (e.g. duplicate inputs).
        """
        self._check_support(support, "support")
        fe = self.deep_kernel.feature_extractor
        z = support_forward(
            lambda x, context_mask=None: self._features(x, "support.x", context_mask), fe, support.x, support.mask, 1
        )
        post = self._posterior_from_features(z, support, self._targets(support))
        if context_mode(fe) == "support":
            post = dataclasses.replace(post, support_x=support.x)
        return post

    def predict(
        self, posterior: TaskPosterior, query_x: torch.Tensor
    ) -> GaussianPredictive | CategoricalPredictive:
        """Posterior predictive at ``query_x`` (``[T, Q, *input]``).

        Returns:
            Regression: ``GaussianPredictive`` with mean ``[1, T, Q, Dy]`` and variance
            ``[1, T, Q, Dy]`` = GP variance + noise. Classification: ``CategoricalPredictive``
            ``[1, T, Q, C]`` (see ``class_probs``).
        """
        z_q = self._query_features(posterior, query_x)
        assert isinstance(posterior, DKTPosterior)
        mean, var_f = self._latent(posterior, z_q)
        return self._to_predictive(posterior, mean, var_f)

    def predict_latent(self, posterior: TaskPosterior, query_x: torch.Tensor) -> GaussianPredictive:
        """The GP's scores at ``query_x`` without the noise: latent ``f``, ``[1, T, Q, D]``.

        For classification, ``D = C`` one-vs-rest scores; useful for inspecting the GPs. The
        variance is clamped at ``1e-12`` where round-off makes it vanish at support points.
        """
        z_q = self._query_features(posterior, query_x)
        assert isinstance(posterior, DKTPosterior)
        mean, var_f = self._latent(posterior, z_q)
        var = var_f.clamp_min(1e-12).unsqueeze(-1).expand_as(mean)
        return GaussianPredictive(mean.unsqueeze(0), var.unsqueeze(0))

    def extra_repr(self) -> str:
        return f"kernel={self.kernel_name!r}, task_kind={self.task_kind!r}, feature_dim={self.feature_dim}"
