"""Latent-variable neural process (Garnelo et al., 2018b).

A global latent ``z ~ q(z | C)`` (diagonal Gaussian from a mean-pooled set encoder) captures the
uncertainty about the whole function; the decoder maps ``[x*, z]`` (and, optionally, a
deterministic mean-pooled ``r``, the ANP paper's NP baseline) to a Gaussian. Training maximizes the
ELBO with the latent posterior conditioned on context + targets and the context-conditioned
encoder as prior; prediction is the mixture over M latent samples. See
:mod:`bayesmeta.inference.neural_process`.

(The module is not called ``np.py`` so that it cannot shadow numpy in tools that put this
directory on ``sys.path``.)
"""

from __future__ import annotations

from bayesmeta.inference.neural_process import NeuralProcess, NeuralProcessPosterior

__all__ = ["NP", "NeuralProcessPosterior"]


class NP(NeuralProcess):
    """Latent-variable neural process.

    Args:
        x_dim: Dx.
        y_dim: Dy.
        hidden: width of the hidden layers.
        r_dim: size of the deterministic representation (with ``deterministic_path``).
        z_dim: size of the latent z.
        encoder_layers: layers of the per-point encoders.
        decoder_layers: hidden layers of the decoder.
        deterministic_path: add the CNP's mean-pooled path next to the latent (ANP paper's NP).
        n_samples: M, latent samples in the predictive.
        min_std: lower bound of the predictive standard deviation (ANP paper: 0.1).
        context_in_target: train on the context points too (the papers' setup).

    Shapes:
        ``adapt``: context -> ``z_mean, z_std [T, z_dim]`` (and ``r [T, r_dim]``).
        ``predict``: ``[T, Q, Dx]`` -> ``GaussianPredictive`` ``[M, T, Q, Dy]``.
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
        deterministic_path: bool = False,
        n_samples: int = 16,
        min_std: float = 0.1,
        context_in_target: bool = True,
    ) -> None:
        super().__init__(
            x_dim=x_dim,
            y_dim=y_dim,
            hidden=hidden,
            r_dim=r_dim,
            z_dim=z_dim,
            encoder_layers=encoder_layers,
            decoder_layers=decoder_layers,
            deterministic="mean" if deterministic_path else "none",
            latent=True,
            n_samples=n_samples,
            min_std=min_std,
            context_in_target=context_in_target,
        )
