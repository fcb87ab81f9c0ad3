"""Reference posteriors to validate Bayesian meta-learners against, and a per-point score.

For the conjugate :class:`~bayesmeta.tasks.LinearGaussian` family (``w ~ N(0, prior_std^2 I)``
over features ``phi(x)``, ``y = phi(x)^T w + eps``, ``eps ~ N(0, noise_std^2)``) the posterior
predictive is known exactly (:func:`exact_reference`). :func:`nuts_posterior` samples the very
same hierarchical model with Pyro's NUTS: it is the reference for models without a closed form,
and agreeing with the closed form here validates it.

:func:`score_against_reference` compares any learner's :class:`~bayesmeta.predictive.GaussianPredictive`
with a reference one, per task and query point. A mixture (particles, samples, NUTS draws) is
first replaced by its moment-matched Gaussian (mixture mean, and variance by the law of total
variance, per output dimension): KL and 2-Wasserstein distances between Gaussians are then in
closed form. The moment match is exact for M = 1 and for the exact reference; for a multimodal
mixture it scores only the first two moments (say so when reporting). KL is taken as
``KL(reference || predictive)``: it punishes a predictive that is too narrow where the reference
has mass (overconfidence) more than one that is too wide.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bayesmeta._validation import check_positive_int, describe
from bayesmeta.exceptions import InvalidValueError, ShapeError
from bayesmeta.predictive import GaussianPredictive
from bayesmeta.tasks.batch import SupportSet, TaskBatch
from bayesmeta.tasks.regression import LinearGaussian

__all__ = [
    "NUTSPosterior",
    "nuts_posterior",
    "exact_reference",
    "gaussian_kl",
    "gaussian_w2",
    "score_against_reference",
]


def _as_support(support: SupportSet | TaskBatch) -> SupportSet:
    if isinstance(support, TaskBatch):
        return support.support
    if not isinstance(support, SupportSet):
        raise ShapeError(f"support: expected a SupportSet or TaskBatch, got {type(support).__name__}")
    return support


def _check_family(family: LinearGaussian) -> None:
    if not isinstance(family, LinearGaussian):
        raise InvalidValueError(f"family: expected a LinearGaussian task family, got {type(family).__name__}")


# ----------------------------------------------------------------------------------- NUTS
@dataclass(frozen=True)
class NUTSPosterior:
    """Posterior samples of the LinearGaussian weights of T tasks.

    Attributes:
        family: the task family (features, prior and noise).
        weights: ``[N, T, F]`` float64 draws (after warm-up).
        ess: ``[T, F]`` effective sample size of every weight.
        divergences: number of divergent transitions after warm-up.
    """

    family: LinearGaussian
    weights: torch.Tensor
    ess: torch.Tensor
    divergences: int

    @property
    def n_samples(self) -> int:
        """N."""
        return self.weights.shape[0]

    @property
    def mean(self) -> torch.Tensor:
        """Posterior mean of the weights, ``[T, F]``."""
        return self.weights.mean(0)

    @property
    def covariance(self) -> torch.Tensor:
        """Sample covariance of the weights (unbiased), ``[T, F, F]``."""
        c = self.weights - self.mean
        return torch.einsum("ntf,ntg->tfg", c, c) / max(self.n_samples - 1, 1)

    def predictive(self, query_x: torch.Tensor, observation_noise: bool = True) -> GaussianPredictive:
        """Posterior predictive as a mixture over the N draws.

        Args:
            query_x: ``[T, Q, D]``.
            observation_noise: add ``noise_std^2`` to every member (predict y, not f).

        Returns:
            :class:`GaussianPredictive` with means ``[N, T, Q, 1]`` in the dtype of ``query_x``.
        """
        t = self.weights.shape[1]
        if not isinstance(query_x, torch.Tensor) or query_x.dim() != 3 or query_x.shape[0] != t:
            got = describe(query_x) if isinstance(query_x, torch.Tensor) else type(query_x).__name__
            raise ShapeError(f"query_x: expected a tensor [T, Q, D] with T = {t}, got {got}")
        phi = self.family.features(query_x.to(torch.float64))  # [T, Q, F]
        mean = torch.einsum("tqf,ntf->ntq", phi, self.weights).unsqueeze(-1)
        # without observation noise the members are deltas; a tiny variance keeps them valid
        var = self.family.noise_std ** 2 if observation_noise else 1e-12
        out = query_x.dtype
        return GaussianPredictive(mean.to(out), torch.full_like(mean, var).to(out))


def nuts_posterior(
    family: LinearGaussian,
    support: SupportSet | TaskBatch,
    num_samples: int = 500,
    warmup: int = 300,
    seed: int = 0,
) -> NUTSPosterior:
    """Sample the LinearGaussian posterior of every task with Pyro's NUTS.

    The Pyro model is the family's own hierarchical model in float64: ``w ~ N(0, prior_std^2)``
    ``[T, F]`` and ``y ~ N(phi(x)^T w, noise_std^2)`` for every present support point (masked
    points are dropped from the likelihood). The T tasks are independent, so one chain samples
    them jointly (dimension T F). Randomness comes from ``seed`` inside
    ``torch.random.fork_rng``: torch's global generator is left as it was.

    Args:
        family: the task family.
        support: one task or a batch (a :class:`SupportSet`, or a :class:`TaskBatch`'s support).
        num_samples: draws kept after warm-up.
        warmup: adaptation steps (step size and diagonal mass matrix).
        seed: seed of the chain.

    Returns:
        A :class:`NUTSPosterior`.
    """
    import pyro
    import pyro.distributions as dist
    from pyro.infer import MCMC, NUTS
    from pyro.ops.stats import effective_sample_size

    _check_family(family)
    s = _as_support(support)
    check_positive_int("num_samples", num_samples)
    check_positive_int("warmup", warmup)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidValueError(f"seed: expected an integer, got {seed!r}")
    if s.n_way is not None or s.y.dim() != 3 or s.y.shape[-1] != 1:
        raise ShapeError(f"support: expected a regression support set with y [T, S, 1], got y {describe(s.y)}")
    phi = family.features(s.x.to(torch.float64))  # [T, S, F]
    y = s.y.to(torch.float64).squeeze(-1)  # [T, S]
    mask = s.mask if s.mask is not None else torch.ones(y.shape, dtype=torch.bool, device=y.device)
    t, f = phi.shape[0], phi.shape[-1]
    prior_std, noise_std = family.prior_std, family.noise_std

    def model() -> None:
        w = pyro.sample(
            "w",
            dist.Normal(torch.zeros(t, f, dtype=torch.float64), torch.full((t, f), prior_std, dtype=torch.float64)).to_event(2),
        )
        mean = (phi @ w.unsqueeze(-1)).squeeze(-1)
        pyro.sample("y", dist.Normal(mean, noise_std).mask(mask).to_event(2), obs=y)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        kernel = NUTS(model, adapt_step_size=True, adapt_mass_matrix=True, jit_compile=False)
        mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup, disable_progbar=True)
        mcmc.run()
    w = mcmc.get_samples()["w"].detach()  # [N, T, F]
    ess = effective_sample_size(w.unsqueeze(0), chain_dim=0, sample_dim=1)
    diverging = mcmc.diagnostics().get("divergences", {})
    n_div = sum(len(v) for v in diverging.values()) if isinstance(diverging, dict) else 0
    return NUTSPosterior(family, w, ess, int(n_div))


# ------------------------------------------------------------------------------- exact
def exact_reference(
    family: LinearGaussian, support: SupportSet | TaskBatch, query_x: torch.Tensor, observation_noise: bool = True
) -> GaussianPredictive:
    """The exact posterior predictive of a LinearGaussian family (M = 1).

    Thin wrapper over :meth:`LinearGaussian.exact_predictive` that also accepts a
    :class:`TaskBatch`; see there for shapes.
    """
    _check_family(family)
    return family.exact_predictive(_as_support(support), query_x, observation_noise=observation_noise)


# ------------------------------------------------------------------------------- scores
def gaussian_kl(mean_p: torch.Tensor, var_p: torch.Tensor, mean_q: torch.Tensor, var_q: torch.Tensor) -> torch.Tensor:
    """``KL(N(mean_p, var_p) || N(mean_q, var_q))`` elementwise (univariate Gaussians)."""
    return 0.5 * (torch.log(var_q / var_p) + (var_p + (mean_p - mean_q) ** 2) / var_q - 1.0)


def gaussian_w2(mean_p: torch.Tensor, var_p: torch.Tensor, mean_q: torch.Tensor, var_q: torch.Tensor) -> torch.Tensor:
    """Squared 2-Wasserstein distance between univariate Gaussians, elementwise.

    ``W2^2 = (mean_p - mean_q)^2 + (sd_p - sd_q)^2``.
    """
    return (mean_p - mean_q) ** 2 + (var_p.sqrt() - var_q.sqrt()) ** 2


def score_against_reference(predictive: GaussianPredictive, reference: GaussianPredictive) -> dict[str, torch.Tensor]:
    """Distances between a learner's predictive and a reference, per task and query point.

    Both are reduced to their moment-matched diagonal Gaussians (mean and total variance per
    output dimension; exact when M = 1), then compared in closed form.

    Args:
        predictive: the learner's predictive, ``[M, T, Q, Dy]`` members.
        reference: the reference (exact: M = 1; NUTS: M = number of draws), same ``T, Q, Dy``.

    Returns:
        ``{"kl": KL(reference || predictive), "w2": 2-Wasserstein distance,
        "var_ratio": predictive variance / reference variance (mean over Dy)}``, each ``[T, Q]``;
        KL and squared W2 are summed over Dy (independent output dimensions).

    Raises:
        ShapeError: a non-Gaussian predictive, or batch shapes / Dy that differ.
    """
    for name, p in (("predictive", predictive), ("reference", reference)):
        if not isinstance(p, GaussianPredictive):
            raise ShapeError(f"{name}: expected a GaussianPredictive, got {type(p).__name__}")
    if predictive.batch_shape != reference.batch_shape or predictive.event_dim != reference.event_dim:
        raise ShapeError(
            f"reference: expected [T, Q, Dy] = {[*predictive.batch_shape, predictive.event_dim]} to match the "
            f"predictive, got {[*reference.batch_shape, reference.event_dim]}"
        )
    dtype = torch.promote_types(predictive.mean.dtype, reference.mean.dtype)
    mp, vp = predictive.mean.to(dtype), predictive.variance.to(dtype)
    mr, vr = reference.mean.to(dtype), reference.variance.to(dtype)
    return {
        "kl": gaussian_kl(mr, vr, mp, vp).sum(-1),
        "w2": gaussian_w2(mr, vr, mp, vp).sum(-1).sqrt(),
        "var_ratio": (vp / vr).mean(-1),
    }
