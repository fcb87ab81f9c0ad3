"""Posterior predictive distributions returned by every learner's ``predict``.

Both types keep the sample dimension M first (posterior samples, SVGD particles, or M = 1 for a
point estimate), then the task dimension T and the query dimension Q. The predictive itself is
the uniform mixture over the M members:

- :class:`CategoricalPredictive`: per-member class log-probabilities ``[M, T, Q, C]``;
- :class:`GaussianPredictive`: per-member means and variances ``[M, T, Q, Dy]`` (diagonal).

Metrics take a predictive and targets, never a learner (DESIGN.md section 3). Inputs are checked
once here, at construction; the methods then assume valid tensors.
"""

from __future__ import annotations

import math

import torch

from bayesmeta._validation import check_finite, check_ndim, describe
from bayesmeta.exceptions import InvalidValueError, ShapeError
from bayesmeta.gaussian import LOG_2PI, gaussian_log_density

__all__ = ["Predictive", "CategoricalPredictive", "GaussianPredictive"]



def _entropy(log_probs: torch.Tensor) -> torch.Tensor:
    """Entropy over the last dim from log-probabilities; 0 * log 0 counts as 0 (not NaN)."""
    p = log_probs.exp()
    return -torch.where(p > 0, p * log_probs, torch.zeros_like(p)).sum(-1)


class Predictive:
    """Base class: a mixture over ``n_samples`` members, batched over tasks and query points."""

    @property
    def n_samples(self) -> int:
        """M, the number of mixture members."""
        raise NotImplementedError

    @property
    def batch_shape(self) -> torch.Size:
        """``[T, Q]``."""
        raise NotImplementedError

    def log_prob(self, y: torch.Tensor) -> torch.Tensor:
        """Log predictive density of ``y`` under the mixture, ``[T, Q]``."""
        raise NotImplementedError


class CategoricalPredictive(Predictive):
    """A uniform mixture of M categorical distributions per task and query point.

    Args:
        logits: ``[M, T, Q, C]`` unnormalized log-probabilities (normalized here), or
        probs: ``[M, T, Q, C]`` probabilities that sum to one along the last dim (tolerance 1e-4).

    Exactly one of ``logits`` and ``probs`` must be given. A ``[T, Q, C]`` tensor is read as M = 1.
    """

    def __init__(self, logits: torch.Tensor | None = None, probs: torch.Tensor | None = None):
        if (logits is None) == (probs is None):
            raise InvalidValueError("CategoricalPredictive: pass exactly one of logits and probs")
        name, t = ("logits", logits) if logits is not None else ("probs", probs)
        assert t is not None
        check_ndim(name, t, (3, 4), "[M, T, Q, C] or [T, Q, C]")
        if t.dim() == 3:
            t = t.unsqueeze(0)
        if logits is not None:
            check_finite("logits", t)
            self._log_probs = torch.log_softmax(t, dim=-1)
        else:
            check_finite("probs", t)
            if bool((t < 0).any()):
                raise InvalidValueError(f"probs: expected non-negative probabilities, got min {float(t.min()):.3g}")
            err = float((t.sum(-1) - 1).abs().max()) if t.numel() else 0.0
            if err > 1e-4:
                raise InvalidValueError(
                    f"probs: expected rows summing to 1 (tolerance 1e-4), got a deviation of {err:.3g}"
                )
            self._log_probs = torch.log(t / t.sum(-1, keepdim=True))

    # ----------------------------------------------------------------- shapes
    @property
    def n_samples(self) -> int:
        return self._log_probs.shape[0]

    @property
    def batch_shape(self) -> torch.Size:
        return self._log_probs.shape[1:3]

    @property
    def n_classes(self) -> int:
        """C."""
        return self._log_probs.shape[-1]

    # ---------------------------------------------------------- probabilities
    @property
    def sample_log_probs(self) -> torch.Tensor:
        """Per-member log-probabilities, ``[M, T, Q, C]``."""
        return self._log_probs

    @property
    def sample_probs(self) -> torch.Tensor:
        """Per-member probabilities, ``[M, T, Q, C]``."""
        return self._log_probs.exp()

    @property
    def log_probs(self) -> torch.Tensor:
        """Log of the mixture's class probabilities, ``[T, Q, C]`` (log-mean-exp over M)."""
        return torch.logsumexp(self._log_probs, dim=0) - math.log(self.n_samples)

    @property
    def probs(self) -> torch.Tensor:
        """Mixture class probabilities, ``[T, Q, C]``."""
        return self.log_probs.exp()

    @property
    def mean(self) -> torch.Tensor:
        """Same as :attr:`probs` (the mean of the one-hot outcome), ``[T, Q, C]``."""
        return self.probs

    @property
    def predicted(self) -> torch.Tensor:
        """Most probable class under the mixture, ``[T, Q]`` int64."""
        return self.log_probs.argmax(-1)

    @property
    def confidence(self) -> torch.Tensor:
        """Mixture probability of the predicted class, ``[T, Q]``."""
        return self.probs.max(-1).values

    def log_prob(self, y: torch.Tensor) -> torch.Tensor:
        """Log-probability of class indices ``y`` (``[T, Q]`` int64), ``[T, Q]``."""
        if y.shape != self.batch_shape:
            raise ShapeError(f"y: expected class indices of shape {list(self.batch_shape)}, got {describe(y)}")
        if y.is_floating_point():
            raise InvalidValueError(f"y: expected integer class indices, got {describe(y)}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.n_classes):
            raise InvalidValueError(f"y: expected labels in [0, {self.n_classes}), got [{int(y.min())}, {int(y.max())}]")
        return self.log_probs.gather(-1, y.unsqueeze(-1)).squeeze(-1)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw one class per task and query point from the mixture, ``[T, Q]`` int64."""
        p = self.probs.reshape(-1, self.n_classes)
        return torch.multinomial(p, 1, generator=generator).reshape(self.batch_shape)

    # ------------------------------------------------------------ uncertainty
    @property
    def entropy(self) -> torch.Tensor:
        """Total predictive entropy H[E_m p_m], ``[T, Q]`` (nats)."""
        return _entropy(self.log_probs)

    @property
    def expected_entropy(self) -> torch.Tensor:
        """Aleatoric part E_m H[p_m], ``[T, Q]``."""
        return _entropy(self._log_probs).mean(0)

    @property
    def mutual_information(self) -> torch.Tensor:
        """Epistemic part H[E_m p_m] - E_m H[p_m] >= 0, ``[T, Q]``; zero when M = 1."""
        return (self.entropy - self.expected_entropy).clamp_min(0.0)

    def detach(self) -> CategoricalPredictive:
        """A copy cut from the autograd graph."""
        return CategoricalPredictive(logits=self._log_probs.detach())

    def __repr__(self) -> str:
        m, t, q, c = self._log_probs.shape
        return f"CategoricalPredictive(M={m}, T={t}, Q={q}, C={c})"


class GaussianPredictive(Predictive):
    """A uniform mixture of M diagonal Gaussians per task and query point.

    Args:
        mean: ``[M, T, Q, Dy]`` member means (``[T, Q, Dy]`` is read as M = 1).
        variance: same shape, member variances, strictly positive.
    """

    def __init__(self, mean: torch.Tensor, variance: torch.Tensor):
        check_ndim("mean", mean, (3, 4), "[M, T, Q, Dy] or [T, Q, Dy]")
        if mean.dim() == 3:
            mean = mean.unsqueeze(0)
        if variance.dim() == 3:
            variance = variance.unsqueeze(0)
        if variance.shape != mean.shape:
            raise ShapeError(f"variance: expected shape {list(mean.shape)} to match mean, got {describe(variance)}")
        check_finite("mean", mean)
        check_finite("variance", variance)
        if variance.numel() and bool((variance <= 0).any()):
            raise InvalidValueError(
                f"variance: expected strictly positive variances, got min {float(variance.min()):.3g}"
            )
        self.sample_mean = mean
        self.sample_variance = variance

    @property
    def n_samples(self) -> int:
        return self.sample_mean.shape[0]

    @property
    def batch_shape(self) -> torch.Size:
        return self.sample_mean.shape[1:3]

    @property
    def event_dim(self) -> int:
        """Dy."""
        return self.sample_mean.shape[-1]

    # --------------------------------------------------------------- moments
    @property
    def mean(self) -> torch.Tensor:
        """Mixture mean, ``[T, Q, Dy]``."""
        return self.sample_mean.mean(0)

    @property
    def aleatoric_variance(self) -> torch.Tensor:
        """E_m[var_m], ``[T, Q, Dy]``: the noise the members agree on."""
        return self.sample_variance.mean(0)

    @property
    def epistemic_variance(self) -> torch.Tensor:
        """Var_m[mean_m] (population variance over members), ``[T, Q, Dy]``; zero when M = 1."""
        return self.sample_mean.var(0, unbiased=False) if self.n_samples > 1 else torch.zeros_like(self.mean)

    @property
    def variance(self) -> torch.Tensor:
        """Mixture variance by the law of total variance, ``[T, Q, Dy]``."""
        return self.aleatoric_variance + self.epistemic_variance

    @property
    def stddev(self) -> torch.Tensor:
        """``sqrt(variance)``, ``[T, Q, Dy]``."""
        return self.variance.sqrt()

    # --------------------------------------------------------------- density
    def _check_y(self, y: torch.Tensor) -> None:
        want = (*self.batch_shape, self.event_dim)
        if tuple(y.shape) != want:
            raise ShapeError(f"y: expected targets of shape {list(want)}, got {describe(y)}")
        check_finite("y", y)

    def component_log_prob(self, y: torch.Tensor) -> torch.Tensor:
        """Per-member log density of ``y`` (``[T, Q, Dy]``), summed over Dy: ``[M, T, Q]``."""
        self._check_y(y)
        m, v = self.sample_mean, self.sample_variance
        return gaussian_log_density(y, m, v).sum(-1)

    def log_prob(self, y: torch.Tensor) -> torch.Tensor:
        """Log density of ``y`` (``[T, Q, Dy]``) under the mixture, ``[T, Q]``."""
        return torch.logsumexp(self.component_log_prob(y), dim=0) - math.log(self.n_samples)

    def cdf(self, y: torch.Tensor) -> torch.Tensor:
        """Per-dimension mixture CDF at ``y`` (``[T, Q, Dy]``), ``[T, Q, Dy]`` — the PIT values."""
        self._check_y(y)
        z = (y - self.sample_mean) / self.sample_variance.sqrt()
        return torch.special.ndtr(z).mean(0)

    def icdf(self, p: float | torch.Tensor, iters: int = 64) -> torch.Tensor:
        """Per-dimension mixture quantile, ``[T, Q, Dy]``.

        Closed form for M = 1; for a mixture, bisection on the monotone CDF between the members'
        extreme quantiles (``iters`` halvings; 64 reaches float64 resolution).
        """
        p_t = torch.as_tensor(p, dtype=self.sample_mean.dtype, device=self.sample_mean.device)
        if bool(((p_t <= 0) | (p_t >= 1)).any()):
            raise InvalidValueError(f"p: expected probabilities in (0, 1), got {p!r}")
        sd = self.sample_variance.sqrt()
        z = torch.special.ndtri(p_t)
        member_q = self.sample_mean + z * sd
        if self.n_samples == 1:
            return member_q[0]
        lo, hi = member_q.min(0).values, member_q.max(0).values
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            below = torch.special.ndtr((mid - self.sample_mean) / sd).mean(0) < p_t
            lo = torch.where(below, mid, lo)
            hi = torch.where(below, hi, mid)
        return 0.5 * (lo + hi)

    def interval(self, level: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
        """Central ``level`` interval of the mixture per dimension: ``(lower, upper)``, each ``[T, Q, Dy]``."""
        if not 0.0 < level < 1.0:
            raise InvalidValueError(f"level: expected a value in (0, 1), got {level!r}")
        a = (1.0 - level) / 2.0
        return self.icdf(a), self.icdf(1.0 - a)

    def sample(self, n: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``n`` samples from the mixture, ``[n, T, Q, Dy]``."""
        shape = (n, *self.batch_shape)
        idx = torch.randint(self.n_samples, shape, generator=generator, device=self.sample_mean.device)
        idx = idx.unsqueeze(-1).expand(*shape, self.event_dim)
        mu = self.sample_mean.unsqueeze(0).expand(n, *self.sample_mean.shape)
        # gather the chosen member for every (draw, task, query) along the M dim
        mu = torch.gather(mu, 1, idx.unsqueeze(1)).squeeze(1)
        sd = torch.gather(self.sample_variance.sqrt().unsqueeze(0).expand(n, *self.sample_mean.shape), 1, idx.unsqueeze(1)).squeeze(1)
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        return mu + sd * eps

    # ------------------------------------------------------------ uncertainty
    @property
    def expected_entropy(self) -> torch.Tensor:
        """Aleatoric part E_m H[N(mean_m, var_m)], ``[T, Q]`` (summed over Dy, nats)."""
        return (0.5 * (1.0 + LOG_2PI + self.sample_variance.log())).sum(-1).mean(0)

    @property
    def entropy(self) -> torch.Tensor:
        """Entropy of the moment-matched Gaussian, ``[T, Q]``.

        A Gaussian mixture has no closed-form entropy; the moment-matched Gaussian's entropy is an
        upper bound on it (the Gaussian maximizes entropy for a given variance), exact for M = 1.
        """
        return (0.5 * (1.0 + LOG_2PI + self.variance.log())).sum(-1)

    @property
    def mutual_information(self) -> torch.Tensor:
        """Epistemic score ``entropy - expected_entropy`` >= 0, ``[T, Q]``; zero when M = 1.

        Computed with the moment-matched entropy, so it grows with the members' disagreement
        ``epistemic_variance`` relative to the noise they expect.
        """
        return (self.entropy - self.expected_entropy).clamp_min(0.0)

    def detach(self) -> GaussianPredictive:
        """A copy cut from the autograd graph."""
        return GaussianPredictive(self.sample_mean.detach(), self.sample_variance.detach())

    def __repr__(self) -> str:
        m, t, q, d = self.sample_mean.shape
        return f"GaussianPredictive(M={m}, T={t}, Q={q}, Dy={d})"
