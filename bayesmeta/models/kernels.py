"""Deep kernels: a GPyTorch base kernel evaluated on a neural feature extractor's output.

A deep kernel is ``k_theta(x, x') = k_base(g_w(x), g_w(x'))`` with a feature extractor ``g_w``
(any backbone; ``backbone.features`` is used when present, so an MLP or Conv4 with a linear head
contributes its penultimate features) and a GPyTorch base kernel. Both are meta-parameters of DKT.

Kernels are evaluated on batched feature tensors ``[T, N, F]``: GPyTorch kernels broadcast over
leading dimensions, so one call covers all tasks (no Python loop over tasks) and the kernel's
hyperparameters are shared by every task, as in Deep Kernel Transfer.

Initialisation (why not GPyTorch's defaults): with all raw parameters at zero, GPyTorch's
``SpectralMixtureKernel`` starts with identical mixture components, which receive identical
gradients and therefore never separate -- the kernel would stay a single component. And a unit
lengthscale on a 40-d (or 64-d) feature vector makes every off-diagonal kernel value vanish at
initialisation, so the marginal likelihood gives the feature extractor no signal. Both kernels
therefore start at a lengthscale of ``sqrt(F)`` (per dimension), which keeps
``|z - z'|^2 / lengthscale^2`` of order one for features of order one; the spectral mixture
means and scales are drawn around that scale with torch's global RNG (seed it for
reproducibility, as for ``nn.Linear``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from bayesmeta._validation import check_positive_int, describe
from bayesmeta.exceptions import ConfigError, ShapeError
from bayesmeta.models._shapes import check_input_shape
from bayesmeta.models.context import context_mode

if TYPE_CHECKING:
    import gpytorch

__all__ = ["KernelName", "DeepKernel", "make_base_kernel"]

KernelName = Literal["rbf", "spectral"]


def make_base_kernel(
    kind: KernelName,
    feature_dim: int,
    n_mixtures: int = 4,
    ard: bool = False,
) -> gpytorch.kernels.Kernel:
    """Build the GPyTorch kernel that acts on ``feature_dim``-d features.

    Args:
        kind: ``"rbf"`` (``ScaleKernel(RBFKernel)``) or ``"spectral"``
            (``SpectralMixtureKernel`` with ``n_mixtures`` components and one frequency and
            scale per feature dimension, as in the DKT sinusoid experiments). Note GPyTorch's
            definition for F > 1: a product over dimensions of one-dimensional mixtures that
            share the weights, ``prod_d sum_q w_q exp(-2 pi^2 s_qd^2 r_d^2) cos(2 pi mu_qd r_d)``,
            so the prior variance is ``(sum_q w_q)^F``; the weights start at ``1 / Q``.
        feature_dim: F, the size of the features the kernel sees.
        n_mixtures: Q, the number of spectral mixture components (``"spectral"`` only).
        ard: one RBF lengthscale per feature dimension instead of one shared lengthscale.

    Returns:
        A kernel with an empty ``batch_shape``: its hyperparameters are shared across tasks.

    Raises:
        ConfigError: unknown ``kind`` or non-positive sizes.
    """
    try:
        check_positive_int("feature_dim", feature_dim)
        check_positive_int("n_mixtures", n_mixtures)
    except ValueError as err:  # re-raise as a config problem: these come from constructor options
        raise ConfigError(str(err)) from err
    import gpytorch  # imported on use: `import bayesmeta` must not load GPyTorch

    ls0 = math.sqrt(feature_dim)
    if kind == "rbf":
        base = gpytorch.kernels.RBFKernel(ard_num_dims=feature_dim if ard else None)
        base.lengthscale = torch.full_like(base.lengthscale, ls0)
        return gpytorch.kernels.ScaleKernel(base)
    if kind == "spectral":
        sm = gpytorch.kernels.SpectralMixtureKernel(num_mixtures=n_mixtures, ard_num_dims=feature_dim)
        shape = sm.raw_mixture_means.shape  # [Q, 1, F]
        # Envelope lengthscale ell = 1 / (2 pi scale): start around sqrt(F), spread by a factor
        # exp(N(0, 0.5^2)) so the components differ; frequencies spread over [0, 1 / ell].
        ell = ls0 * torch.exp(0.5 * torch.randn(shape))
        sm.mixture_scales = 1.0 / (2.0 * math.pi * ell)
        sm.mixture_means = torch.rand(shape) / ls0 + 1e-3
        sm.mixture_weights = torch.full((n_mixtures,), 1.0 / n_mixtures)
        return sm
    raise ConfigError(f"kernel: expected 'rbf' or 'spectral', got {kind!r}")


class DeepKernel(nn.Module):
    """A base kernel on learned features: ``k(x, x') = k_base(g(x), g(x'))``.

    Args:
        feature_extractor: module mapping ``[..., *input]`` to ``[..., F]``; its ``features``
            method is used when it has one (backbones with a linear head), else ``forward``.
        base_kernel: a GPyTorch kernel on F-d inputs with an empty ``batch_shape``.

    The kernel methods take features (not raw inputs) so that a caller that needs features of
    support and query points computes them once and reuses them.
    """

    def __init__(self, feature_extractor: nn.Module, base_kernel: gpytorch.kernels.Kernel) -> None:
        import gpytorch

        super().__init__()
        if not isinstance(base_kernel, gpytorch.kernels.Kernel):
            raise ConfigError(f"base_kernel: expected a gpytorch Kernel, got {type(base_kernel).__name__}")
        self.feature_extractor = feature_extractor
        self.base_kernel = base_kernel

    def features(self, x: torch.Tensor, name: str = "x", context_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Features ``[T, N, *input] -> [T, N, F]``.

        A per-example extractor sees one flat batch ``[T * N, *input]`` (what any backbone
        accepts) and must return ``[T * N, F]``. A context-normalized one
        (:mod:`bayesmeta.models.context`) sees ``[T, N, *input]`` and ``context_mask`` ``[T, N]``
        (the examples whose statistics normalize each task). ``name`` names ``x`` in errors.
        """
        fe = self.feature_extractor
        check_input_shape(fe, x, name)
        fn = fe.features if hasattr(fe, "features") else fe
        if context_mode(fe) is not None:
            z = fn(x, context_mask=context_mask)
            if z.dim() != 3 or tuple(z.shape[:2]) != tuple(x.shape[:2]):
                raise ShapeError(f"{name}: expected the feature extractor to map {list(x.shape)} to [T, N, F], got {describe(z)}")
            return z
        z = fn(x.flatten(0, 1))
        if z.dim() != 2 or z.shape[0] != x.shape[0] * x.shape[1]:
            raise ShapeError(
                f"{name}: expected the feature extractor to map [T * N, *input] = "
                f"{[x.shape[0] * x.shape[1], *x.shape[2:]]} to [T * N, F], got {describe(z)}"
            )
        return z.reshape(*x.shape[:2], z.shape[-1])

    def covariance(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """Dense cross-covariance ``k(z1, z2)``: ``[T, N, F], [T, M, F] -> [T, N, M]``."""
        return self.base_kernel(z1, z2).to_dense()

    def variance(self, z: torch.Tensor) -> torch.Tensor:
        """Prior variances ``k(z_i, z_i)``: ``[T, N, F] -> [T, N]``."""
        return self.base_kernel(z, z, diag=True)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """``k(x1, x2)`` on raw inputs, ``[T, N, *input], [T, M, *input] -> [T, N, M]``."""
        return self.covariance(self.features(x1), self.features(x2))
