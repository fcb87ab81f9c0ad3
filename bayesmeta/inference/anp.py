"""Attentive neural process (Kim et al., 2019): cross-attention deterministic path + latent path.

The deterministic representation at a target ``x*`` is multi-head cross-attention from
``MLP(x*)`` (query) to the context's ``MLP(x_i)`` (keys) over the per-point encodings of
``(x_i, y_i)`` (values), with hidden context points masked out of the keys. Each target thus reads
the context points near it, which removes the CNP/NP underfitting of the context set. The latent
path and the ELBO are the NP's; the encoders can add masked self-attention over the context
(``self_attention=True``, the paper's full ANP). See :mod:`bayesmeta.inference.neural_process`.
"""

from __future__ import annotations

from bayesmeta.inference.neural_process import NeuralProcess, NeuralProcessPosterior

__all__ = ["ANP", "NeuralProcessPosterior"]


class ANP(NeuralProcess):
    """Attentive neural process.

    Args:
        x_dim: Dx.
        y_dim: Dy.
        hidden: width of the hidden layers (and of the query/key embeddings).
        r_dim: size of the attention values and output (divisible by ``n_heads``).
        z_dim: size of the latent z.
        encoder_layers: layers of the per-point encoders.
        decoder_layers: hidden layers of the decoder.
        n_heads: attention heads (ANP paper: 8).
        self_attention: masked self-attention over the context in both encoders.
        n_samples: M, latent samples in the predictive.
        min_std: lower bound of the predictive standard deviation (ANP paper: 0.1).
        context_in_target: train on the context points too (the papers' setup).

    Shapes:
        ``adapt``: context -> keys ``[T, S, hidden]``, values ``[T, S, r_dim]``,
        ``z_mean, z_std [T, z_dim]``.
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
        n_heads: int = 8,
        self_attention: bool = False,
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
            deterministic="attention",
            latent=True,
            n_heads=n_heads,
            self_attention=self_attention,
            n_samples=n_samples,
            min_std=min_std,
            context_in_target=context_in_target,
        )
