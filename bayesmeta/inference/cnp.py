"""Conditional neural process (Garnelo et al., 2018a): the deterministic path alone.

The context is summarized by the masked mean of per-point encodings of ``(x_i, y_i)``; the
decoder maps ``[x*, r]`` to a Gaussian with a learned, input-dependent variance. There is no
latent variable, so the predictive is a single Gaussian per point (M = 1) and the model cannot
express correlated uncertainty about the whole function. See
:mod:`bayesmeta.inference.neural_process` for the objective and the variance parameterization.
"""

from __future__ import annotations

from bayesmeta.inference.neural_process import NeuralProcess, NeuralProcessPosterior

__all__ = ["CNP", "NeuralProcessPosterior"]


class CNP(NeuralProcess):
    """Conditional neural process.

    Args:
        x_dim: Dx.
        y_dim: Dy.
        hidden: width of the hidden layers.
        r_dim: size of the pooled representation r.
        encoder_layers: layers of the per-point encoder (the last has width ``r_dim``).
        decoder_layers: hidden layers of the decoder.
        min_std: lower bound of the predictive standard deviation (ANP paper: 0.1).
        context_in_target: train on the context points too (the papers' setup).

    Shapes:
        ``adapt``: context ``[T, S, Dx]``/``[T, S, Dy]`` -> ``r [T, r_dim]``.
        ``predict``: ``[T, Q, Dx]`` -> ``GaussianPredictive`` ``[1, T, Q, Dy]``.
    """

    def __init__(
        self,
        x_dim: int = 1,
        y_dim: int = 1,
        hidden: int = 128,
        r_dim: int = 128,
        encoder_layers: int = 3,
        decoder_layers: int = 2,
        min_std: float = 0.1,
        context_in_target: bool = True,
    ) -> None:
        super().__init__(
            x_dim=x_dim,
            y_dim=y_dim,
            hidden=hidden,
            r_dim=r_dim,
            encoder_layers=encoder_layers,
            decoder_layers=decoder_layers,
            deterministic="mean",
            latent=False,
            min_std=min_std,
            context_in_target=context_in_target,
        )
