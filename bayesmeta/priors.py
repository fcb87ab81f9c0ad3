"""Learned hierarchical priors p(phi | theta) over a backbone's parameters.

:class:`DiagonalGaussianPrior` is the prior of BMAML and PLATIPUS: a fully factorized Gaussian
with one learned mean and one learned log-variance per parameter entry of the backbone,

    phi ~ N(mu, diag(exp(log_var))),

where ``mu`` *is* the backbone's parameter set (so a prior built on a freshly initialised network
starts at that initialisation, and a prior built on a trained MAML network starts at MAML's
solution). :meth:`DiagonalGaussianPrior.sample_functions` draws whole task models from it, which
shows what the meta-learned prior believes before any data: plot ``sample_functions(x, 20)``
against ``x``.

Parameter dicts follow :mod:`~bayesmeta.inference.inner_loop`: ``{name: tensor}`` with the
backbone's ``named_parameters()`` names and shapes, optionally with leading batch dims.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn
from torch.func import functional_call, vmap

from bayesmeta._validation import check_positive_int, describe
from bayesmeta.exceptions import InvalidValueError, ShapeError
from bayesmeta.gaussian import gaussian_log_density

__all__ = ["DiagonalGaussianPrior"]

Params = dict[str, torch.Tensor]



def _key(name: str) -> str:
    # ParameterDict keys may not contain '.'
    return name.replace(".", "__")


class DiagonalGaussianPrior(nn.Module):
    """A diagonal Gaussian over every parameter of ``model``, with learned mean and log-variance.

    Args:
        model: the backbone. Its parameters are the prior mean (they are registered here, so
            ``prior.parameters()`` yields the mean and the log-variances).
        init_std: initial standard deviation of every entry, > 0.

    Attributes:
        model: the backbone (the mean, and the architecture used by :meth:`sample_functions`).
        log_var: ``ParameterDict`` of log-variances, keys are parameter names with ``.`` -> ``__``.

    Raises:
        InvalidValueError: ``init_std`` is not a positive finite number, or the model has no
            parameters.
    """

    def __init__(self, model: nn.Module, init_std: float = 0.1) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise InvalidValueError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        if (
            isinstance(init_std, bool)
            or not isinstance(init_std, (int, float))
            or not math.isfinite(init_std)
            or init_std <= 0
        ):
            raise InvalidValueError(f"init_std: expected a positive finite float, got {init_std!r}")
        named = dict(model.named_parameters())
        if not named:
            raise InvalidValueError(f"model: {type(model).__name__} has no parameters to put a prior on")
        self.model = model
        self.init_std = float(init_std)
        self.log_var = nn.ParameterDict(
            {_key(n): nn.Parameter(torch.full_like(p.detach(), 2.0 * math.log(init_std))) for n, p in named.items()}
        )

    # ------------------------------------------------------------------ moments
    @property
    def names(self) -> tuple[str, ...]:
        """Parameter names of the backbone, in ``named_parameters()`` order."""
        return tuple(n for n, _ in self.model.named_parameters())

    @property
    def mean(self) -> Params:
        """Prior mean ``{name: [*shape]}`` (the backbone's parameters themselves)."""
        return dict(self.model.named_parameters())

    @property
    def log_variance(self) -> Params:
        """``{name: [*shape]}`` log-variances."""
        return {n: self.log_var[_key(n)] for n in self.names}

    @property
    def variance(self) -> Params:
        """``{name: [*shape]}`` variances ``exp(log_var)``."""
        return {n: v.exp() for n, v in self.log_variance.items()}

    @property
    def stddev(self) -> Params:
        """``{name: [*shape]}`` standard deviations ``exp(log_var / 2)``."""
        return {n: (0.5 * v).exp() for n, v in self.log_variance.items()}

    @property
    def n_params(self) -> int:
        """Total number of scalar parameters P covered by the prior."""
        return sum(p.numel() for p in self.model.parameters())

    # ------------------------------------------------------------------- checks
    def check_params(self, params: Mapping[str, torch.Tensor], name: str = "params") -> torch.Size:
        """Check that ``params`` matches the backbone; return the common leading batch shape.

        Args:
            params: ``{name: [*batch, *shape]}`` with exactly the backbone's names.
            name: argument name used in error messages.

        Returns:
            ``batch`` (``torch.Size([])`` for a single parameter set).

        Raises:
            ShapeError: a missing or unexpected name, a trailing shape that differs from the
                backbone's, or batch shapes that differ between entries.
        """
        if not isinstance(params, Mapping):
            raise ShapeError(f"{name}: expected a dict of tensors keyed by parameter name, got {type(params).__name__}")
        mean = self.mean
        missing = [k for k in mean if k not in params]
        extra = [k for k in params if k not in mean]
        if missing or extra:
            raise ShapeError(
                f"{name}: expected the backbone's parameter names {list(mean)}, "
                f"missing {missing}, unexpected {extra}"
            )
        batch: torch.Size | None = None
        for k, mu in mean.items():
            v = params[k]
            if not isinstance(v, torch.Tensor):
                raise ShapeError(f"{name}[{k!r}]: expected a tensor, got {type(v).__name__}")
            nb = v.dim() - mu.dim()
            if nb < 0 or v.shape[nb:] != mu.shape:
                raise ShapeError(
                    f"{name}[{k!r}]: expected shape [*batch, {', '.join(map(str, mu.shape))}] "
                    f"to match the backbone, got {describe(v)}"
                )
            if batch is None:
                batch = v.shape[:nb]
            elif v.shape[:nb] != batch:
                raise ShapeError(
                    f"{name}[{k!r}]: expected batch shape {list(batch)} like the other entries, got {describe(v)}"
                )
        assert batch is not None
        return batch

    # ------------------------------------------------------------------ density
    def log_prob(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Log density of parameter sets under the prior, summed over every entry.

        Safe under ``vmap``/``grad`` (only shape checks, which are static).

        Args:
            params: ``{name: [*batch, *shape]}``.

        Returns:
            ``[*batch]`` log densities.

        Raises:
            ShapeError: ``params`` does not match the backbone (see :meth:`check_params`).
        """
        batch = self.check_params(params)
        nb = len(batch)
        total: torch.Tensor | None = None
        for n, mu in self.mean.items():
            lv = self.log_var[_key(n)]
            term = gaussian_log_density(params[n], mu, torch.exp(lv))
            term = term.reshape(*batch, -1).sum(-1) if nb else term.sum()
            total = term if total is None else total + term
        assert total is not None
        return total

    def sample(self, n: int, generator: torch.Generator | None = None) -> Params:
        """Draw ``n`` parameter sets by reparameterization (differentiable in mean and log-var).

        Args:
            n: number of draws, >= 1.
            generator: source of randomness (``None``: torch's default generator).

        Returns:
            ``{name: [n, *shape]}``.
        """
        check_positive_int("n", n)
        out: Params = {}
        for name, mu in self.mean.items():
            eps = torch.randn((n, *mu.shape), generator=generator, dtype=mu.dtype, device=mu.device)
            out[name] = mu + (0.5 * self.log_var[_key(name)]).exp() * eps
        return out

    def sample_functions(self, x: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Evaluate ``n`` task models drawn from the prior at the same inputs.

        The draws are mapped with ``torch.func.vmap`` over ``functional_call`` (no module copies).
        Wrap in ``torch.no_grad()`` for plotting.

        Args:
            x: ``[N, *features]`` inputs the backbone accepts.
            n: number of functions.
            generator: source of randomness.

        Returns:
            ``[n, N, out]`` outputs of the sampled networks (``[n, N, *out_shape]`` in general).
        """
        if not isinstance(x, torch.Tensor) or x.dim() < 1:
            got = describe(x) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ShapeError(f"x: expected a tensor [N, *features], got {got}")
        draws = self.sample(n, generator)
        buffers = dict(self.model.named_buffers())
        model = self.model

        def f(p: Params) -> torch.Tensor:
            return functional_call(model, {**p, **buffers}, (x,))

        return vmap(f)(draws)

    def extra_repr(self) -> str:
        return f"n_params={self.n_params}, init_std={self.init_std}"
