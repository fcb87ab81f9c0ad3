"""Gaussian building blocks shared across layers: log density, robust Cholesky, masked GP conditioning.

A ground-floor module (it imports only torch, numpy and the exception hierarchy), so that the
deep-kernel learner (:mod:`bayesmeta.inference.dkt`) and the GP task family's exact oracle
(:mod:`bayesmeta.tasks.gp_curves`) condition a Gaussian process with one implementation:

- :func:`gaussian_log_density`: ``log N(y; mean, variance)`` elementwise;
- :func:`robust_cholesky`: batched Cholesky with per-matrix jitter escalation (a matrix that
  factorizes is left exactly as it is, so a task never depends on the others in a batch);
- :func:`gp_condition`: condition D GPs sharing one kernel matrix per task on ragged (masked)
  support sets, with padding removed exactly;
- :func:`gp_predict`: the latent posterior mean and variance at query points.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from bayesmeta._validation import describe
from bayesmeta.exceptions import NumericalError

__all__ = [
    "CholeskyJitterWarning",
    "LOG_2PI",
    "gaussian_log_density",
    "gp_condition",
    "gp_predict",
    "robust_cholesky",
]

#: ``log(2 pi)``.
LOG_2PI = math.log(2.0 * math.pi)


def gaussian_log_density(y: torch.Tensor, mean: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """``log N(y; mean, variance)`` elementwise (broadcasting), no reduction."""
    return -0.5 * (LOG_2PI + variance.log() + (y - mean) ** 2 / variance)


class CholeskyJitterWarning(RuntimeWarning):
    """A kernel matrix needed diagonal jitter before its Cholesky factorization succeeded."""


# --------------------------------------------------------------------------- linear algebra
def robust_cholesky(
    a: torch.Tensor,
    initial_jitter: float = 1e-6,
    max_jitter: float = 1e-1,
    name: str = "kernel matrix",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched Cholesky factor with per-matrix jitter escalation.

    Matrices whose factorization fails get ``jitter * mean(diag)`` added to their diagonal, with
    ``jitter`` = ``initial_jitter``, 10x that, ... up to ``max_jitter``; the others are left
    exactly as they are (so a task's result does not depend on the other tasks in the batch).
    The jitter is relative to the mean diagonal so that it means the same for any output scale.

    Args:
        a: ``[..., N, N]`` symmetric matrices (``K + sigma^2 I``).
        initial_jitter: first relative jitter tried after a failure.
        max_jitter: the largest relative jitter tried before giving up.
        name: what ``a`` is, for the messages.

    Returns:
        ``(L, jitter)``: lower factors ``[..., N, N]`` and the relative jitter used per matrix
        ``[...]`` (0 where none was needed).

    Warns:
        CholeskyJitterWarning: when any matrix needed jitter (how many, and how much).

    Raises:
        NumericalError: ``a`` holds NaN/Inf, or a factorization still fails at ``max_jitter``.
    """
    batch = a.shape[:-2]
    if not bool(torch.isfinite(a).all()):
        raise NumericalError(
            f"{name}: expected finite entries, got NaN/Inf in a tensor of {describe(a)} "
            "(non-finite features from the backbone, or diverged hyperparameters)"
        )
    chol, info = torch.linalg.cholesky_ex(a)
    jitter = torch.zeros(batch, dtype=a.dtype, device=a.device)
    failed = info != 0
    if not bool(failed.any()):
        return chol, jitter
    n_failed = int(failed.sum())
    scale = a.diagonal(dim1=-2, dim2=-1).mean(-1).abs().detach().clamp_min(torch.finfo(a.dtype).tiny)
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    j = initial_jitter
    while j <= max_jitter * (1 + 1e-9):
        jitter = torch.where(failed, torch.full_like(jitter, j), jitter)
        chol_j, info_j = torch.linalg.cholesky_ex(a + (jitter * scale)[..., None, None] * eye)
        # keep the jitter-free factor where it worked, take the jittered one where it was needed
        chol = torch.where(failed[..., None, None], chol_j, chol)
        failed = failed & (info_j != 0)
        if not bool(failed.any()):
            warnings.warn(
                f"{name}: Cholesky factorization failed for {n_failed} of "
                f"{max(1, int(np.prod(tuple(batch))))} matrices; succeeded after adding relative jitter up to {j:.0e} "
                "(x mean diagonal). Duplicate or near-duplicate inputs with a small noise make "
                "the kernel matrix near-singular.",
                CholeskyJitterWarning,
                stacklevel=3,
            )
            return chol, jitter
        j *= 10.0
    idx = failed.nonzero().tolist()[:10]
    raise NumericalError(
        f"{name}: Cholesky factorization failed even with relative jitter {max_jitter:.0e} for "
        f"batch entries {idx}; the kernel matrix is not positive definite "
        "(check the features for collapse and the noise for underflow)"
    )


def gp_condition(
    k_ss: torch.Tensor,
    mean_s: torch.Tensor,
    targets: torch.Tensor,
    noise: torch.Tensor,
    mask: torch.Tensor | None = None,
    max_jitter: float = 1e-1,
    name: str = "kernel matrix K + noise*I",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Condition D independent GPs sharing one kernel matrix per task on their targets.

    Args:
        k_ss: ``[T, S, S]`` prior covariance of the support points.
        mean_s: ``[T, S]`` prior mean at the support points.
        targets: ``[T, S, D]`` observations.
        noise: noise variance: a scalar (or ``[1]``), or ``[T]`` (one per task).
        mask: ``[T, S]`` bool, True = present; ``None`` means all present.
        max_jitter: cap of :func:`robust_cholesky`.
        name: what the matrix is, for error messages.

    Returns:
        ``(chol [T, S, S], alpha [T, S, D], log_marginal [T], jitter [T])``; ``log_marginal`` is
        ``sum_d log N(y_d | m, K + sigma^2 I)`` over present points only.
    """
    t, s, _ = k_ss.shape
    d = targets.shape[-1]
    noise = noise.reshape(-1, 1) if noise.numel() > 1 else noise.reshape(1, 1)  # [T or 1, 1]
    resid = targets - mean_s.unsqueeze(-1)  # [T, S, D]
    if mask is None:
        a = k_ss + torch.diag_embed(noise.expand(t, s))
        n_present = torch.full((t,), float(s), dtype=k_ss.dtype, device=k_ss.device)
    else:
        # Exact removal of padding: zero the padded rows/columns, put 1 on their diagonal and 0 in
        # their residual; the factor then has those rows decoupled (L_ii = 1, zeros elsewhere).
        pair = mask.unsqueeze(-1) & mask.unsqueeze(-2)
        diag = torch.where(mask, noise.expand(t, s), k_ss.new_ones(()))
        a = torch.where(pair, k_ss, k_ss.new_zeros(())) + torch.diag_embed(diag)
        resid = resid * mask.unsqueeze(-1).to(resid.dtype)
        n_present = mask.sum(-1).to(k_ss.dtype)
    chol, jitter = robust_cholesky(a, max_jitter=max_jitter, name=name)
    alpha = torch.cholesky_solve(resid, chol)  # [T, S, D]
    log_diag = chol.diagonal(dim1=-2, dim2=-1).log()  # [T, S]
    if mask is not None:
        log_diag = log_diag * mask.to(log_diag.dtype)
    quad = (resid * alpha).sum((-2, -1))  # sum_d r_d^T K^-1 r_d
    log_marginal = -0.5 * quad - d * log_diag.sum(-1) - 0.5 * d * n_present * LOG_2PI
    return chol, alpha, log_marginal, jitter


def gp_predict(
    chol: torch.Tensor, alpha: torch.Tensor, k_qs: torch.Tensor, k_qq_diag: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Latent GP posterior at query points from :func:`gp_condition`'s factor (prior mean excluded).

    Args:
        chol: ``[T, S, S]`` and alpha: ``[T, S, D]``, from :func:`gp_condition`.
        k_qs: ``[T, Q, S]`` prior cross-covariance of queries and support points.
        k_qq_diag: ``[T, Q]`` prior variance at the queries.
        mask: ``[T, S]`` bool, True = present; padded support points get zero cross-covariance.

    Returns:
        ``(k_qs alpha [T, Q, D], variance [T, Q])``; the variance is clamped at 0 (round-off can
        push ``k_qq - k_qs K^-1 k_sq`` slightly below zero at a support point).
    """
    if mask is not None:
        k_qs = k_qs * mask.unsqueeze(-2).to(k_qs.dtype)
    v = torch.linalg.solve_triangular(chol, k_qs.transpose(-1, -2), upper=False)  # [T, S, Q]
    return k_qs @ alpha, (k_qq_diag - (v * v).sum(-2)).clamp_min(0.0)
