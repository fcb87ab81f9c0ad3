"""Amortization networks: a set of support features in, a Gaussian over a task's head out.

VERSA (Gordon et al., 2019) replaces per-task optimization by one forward pass of an inference
network ``q_psi(head_t | support_t)``:

- classification (:class:`ClassAmortization`): each class's weight vector and bias are inferred
  *independently* from that class's mean-pooled features, so one network serves any number of
  ways. Output: mean and log-variance of ``w_k`` ``[D]`` and ``b_k`` (scalar) per class.
- regression (:class:`LinearHeadAmortization`): a Deep Sets encoder over ``(f(x_i), y_i)`` pairs
  gives a Gaussian over the linear head ``W [D, Dy]``, ``b [Dy]`` and a per-task noise scale.

:class:`PrototypeAmortization` is the fixed map ``w_k = 2 c_k``, ``b_k = -||c_k||^2`` without
variance: with it VERSA's logits are ``-||f(x) - c_k||^2 + ||f(x)||^2``, i.e. ProtoNets' logits
up to a per-query shift that the softmax removes (DESIGN.md section 1).
:class:`PrototypeResidualAmortization` is VERSA's classification networks as a correction to that
map: it starts as ProtoNets and learns the head's variance (and any change of its mean) from there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bayesmeta._validation import check_positive_int, describe
from bayesmeta.exceptions import InvalidValueError, ShapeError
from bayesmeta.models.set_encoders import DeepSetEncoder

__all__ = [
    "HeadGaussian",
    "ClassAmortization",
    "PrototypeAmortization",
    "PrototypeResidualAmortization",
    "LinearHeadAmortization",
]

#: Initial bias of the log-variance heads: the inferred heads start almost deterministic so that
#: early training is not drowned in sampling noise; the networks learn how much variance to keep.
_INIT_LOGVAR = -6.0


@dataclass
class HeadGaussian:
    """A diagonal Gaussian over a linear head ``out = f @ w + b`` per task.

    Classification layout (one head row per class): ``w_mean [T, C, D]``, ``b_mean [T, C]``.
    Regression layout: ``w_mean [T, D, Dy]``, ``b_mean [T, Dy]``. The log-variances have the
    shapes of the means, or are ``None`` for a point estimate. ``noise_std`` ``[T, Dy]`` is the
    per-task observation noise (regression only).
    """

    w_mean: torch.Tensor
    b_mean: torch.Tensor
    w_logvar: torch.Tensor | None = None
    b_logvar: torch.Tensor | None = None
    noise_std: torch.Tensor | None = None

    @property
    def has_variance(self) -> bool:
        """True unless the head is a point estimate."""
        return self.w_logvar is not None


def _mlp(
    in_features: int, hidden: int, out_features: int, init_bias: float | None = None, out_bias: bool = True
) -> nn.Sequential:
    """VERSA's ``inference_block``: two ELU hidden layers of width ``hidden`` and a linear output."""
    net = nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.ELU(),
        nn.Linear(hidden, hidden),
        nn.ELU(),
        nn.Linear(hidden, out_features, bias=out_bias),
    )
    if init_bias is not None:
        last = net[-1]
        assert isinstance(last, nn.Linear)
        nn.init.constant_(last.bias, init_bias)
        # small weights too, so the log-variance starts near ``init_bias`` for any input
        nn.init.normal_(last.weight, std=1e-3)
    return net


class ClassAmortization(nn.Module):
    """Per-class amortization network of VERSA for classification.

    Args:
        feature_dim: D, size of the backbone features.
        hidden: width of the hidden layers (default D).
        variance: infer log-variances too; ``False`` gives a point estimate (no log-variance
            networks are built, so no parameter is left without gradient).

    Shapes:
        ``forward``: class means ``[T, C, D]`` -> :class:`HeadGaussian` with ``w [T, C, D]``,
        ``b [T, C]``.
    """

    def __init__(self, feature_dim: int, hidden: int | None = None, variance: bool = True) -> None:
        super().__init__()
        check_positive_int("feature_dim", feature_dim)
        hidden = feature_dim if hidden is None else check_positive_int("hidden", hidden)
        self.feature_dim = feature_dim
        self.variance = bool(variance)
        self.weight_mean = _mlp(feature_dim, hidden, feature_dim)
        # No output bias: it would add one constant to every class's logit, which the softmax
        # ignores (its gradient is exactly zero). Weights saved with it load without it.
        self.bias_mean = _mlp(feature_dim, hidden, 1, out_bias=False)
        self.weight_logvar: nn.Module | None = None
        self.bias_logvar: nn.Module | None = None
        if self.variance:
            self.weight_logvar = _mlp(feature_dim, hidden, feature_dim, _INIT_LOGVAR)
            self.bias_logvar = _mlp(feature_dim, hidden, 1, _INIT_LOGVAR)

    def forward(self, class_features: torch.Tensor) -> HeadGaussian:
        if class_features.dim() != 3 or class_features.shape[-1] != self.feature_dim:
            raise ShapeError(
                f"class_features: expected [T, C, {self.feature_dim}], got {describe(class_features)}"
            )
        out = HeadGaussian(self.weight_mean(class_features), self.bias_mean(class_features).squeeze(-1))
        if self.weight_logvar is not None and self.bias_logvar is not None:
            out.w_logvar = self.weight_logvar(class_features)
            out.b_logvar = self.bias_logvar(class_features).squeeze(-1)
        return out

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):  # type: ignore[no-untyped-def]
        # bayesmeta 0.1 had a shared output bias in bias_mean: a common logit shift, so dropping
        # it leaves every prediction unchanged.
        state_dict.pop(f"{prefix}bias_mean.4.bias", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)


class PrototypeAmortization(nn.Module):
    """The fixed amortization ``w_k = 2 c_k``, ``b_k = -||c_k||^2`` (no parameters, no variance).

    With it VERSA is a prototypical network (Snell et al., 2017).
    """

    variance = False

    def forward(self, class_features: torch.Tensor) -> HeadGaussian:
        if class_features.dim() != 3:
            raise ShapeError(f"class_features: expected [T, C, D], got {describe(class_features)}")
        return HeadGaussian(2.0 * class_features, -(class_features**2).sum(-1))


class PrototypeResidualAmortization(ClassAmortization):
    """VERSA's per-class networks as a residual on the ProtoNets head, with a learned variance.

    The head's mean is ``w_k = 2 c_k + g_w(c_k)``, ``b_k = -||c_k||^2 + g_b(c_k)``, where
    ``g_w``, ``g_b`` are :class:`ClassAmortization`'s mean networks with their output layers
    initialised to zero, and its log-variance comes from :class:`ClassAmortization`'s log-variance
    networks. An untrained learner is therefore a prototypical network whose heads are almost
    deterministic (log-variance ``_INIT_LOGVAR``).

    Why: VERSA's plain networks must learn the map ``c -> (2c, -||c||^2)`` that ProtoNets get for
    free (the bias is quadratic in ``c``; two ELU layers only approximate it), and with the same
    budget they ended less accurate than ProtoNets on Omniglot (docs/benchmarks.md, issue 13).
    Starting at that map leaves the networks only the correction and the variance to learn.

    Args:
        feature_dim: D, size of the backbone features.
        hidden: width of the hidden layers (default D).
        variance: infer log-variances too (``False``: a point estimate, ProtoNets plus a learned
            correction).

    Shapes:
        ``forward``: class means ``[T, C, D]`` -> :class:`HeadGaussian` with ``w [T, C, D]``,
        ``b [T, C]``.
    """

    def __init__(self, feature_dim: int, hidden: int | None = None, variance: bool = True) -> None:
        super().__init__(feature_dim, hidden, variance)
        for net in (self.weight_mean, self.bias_mean):
            last = net[-1]
            assert isinstance(last, nn.Linear)
            nn.init.zeros_(last.weight)
            if last.bias is not None:
                nn.init.zeros_(last.bias)

    def forward(self, class_features: torch.Tensor) -> HeadGaussian:
        out = super().forward(class_features)  # checks the shape
        out.w_mean = out.w_mean + 2.0 * class_features
        out.b_mean = out.b_mean - (class_features**2).sum(-1)
        return out


class LinearHeadAmortization(nn.Module):
    """Amortized Gaussian over a regression task's linear head on shared features.

    A Deep Sets encoder over the support pairs ``[f(x_i), y_i]`` gives a task summary ``r``;
    linear maps of ``r`` give the mean (and log-variance) of ``W [D, Dy]`` and ``b [Dy]``, and the
    task's observation noise ``noise_std = min_noise_std + softplus(.)``.

    Args:
        feature_dim: D.
        y_dim: Dy.
        hidden: width of the set encoder.
        variance: infer log-variances (``False``: point estimate of the head).
        min_noise_std: lower bound of the observation noise standard deviation (> 0 keeps the
            likelihood bounded when the head interpolates the support set).

    Shapes:
        ``forward``: features ``[T, S, D]``, y ``[T, S, Dy]``, mask ``[T, S]`` ->
        :class:`HeadGaussian` with ``w [T, D, Dy]``, ``b [T, Dy]``, ``noise_std [T, Dy]``.
    """

    def __init__(
        self,
        feature_dim: int,
        y_dim: int = 1,
        hidden: int = 128,
        variance: bool = True,
        min_noise_std: float = 0.01,
    ) -> None:
        super().__init__()
        check_positive_int("feature_dim", feature_dim)
        check_positive_int("y_dim", y_dim)
        check_positive_int("hidden", hidden)
        if not float(min_noise_std) > 0.0:
            raise InvalidValueError(f"min_noise_std: expected a value > 0, got {min_noise_std!r}")
        self.feature_dim, self.y_dim = feature_dim, y_dim
        self.variance = bool(variance)
        self.min_noise_std = float(min_noise_std)
        self.encoder = DeepSetEncoder(feature_dim + y_dim, (hidden, hidden, hidden), post=(hidden,))
        n_w, n_b = feature_dim * y_dim, y_dim
        self.mean_head = nn.Linear(hidden, n_w + n_b)
        self.noise_head = nn.Linear(hidden, y_dim)
        self.logvar_head: nn.Linear | None = None
        if self.variance:
            self.logvar_head = nn.Linear(hidden, n_w + n_b)
            nn.init.constant_(self.logvar_head.bias, _INIT_LOGVAR)
            nn.init.normal_(self.logvar_head.weight, std=1e-3)

    def _split(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n_w = self.feature_dim * self.y_dim
        return v[:, :n_w].reshape(-1, self.feature_dim, self.y_dim), v[:, n_w:]

    def forward(
        self, features: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None
    ) -> HeadGaussian:
        if features.dim() != 3 or features.shape[-1] != self.feature_dim:
            raise ShapeError(f"features: expected [T, S, {self.feature_dim}], got {describe(features)}")
        if y.dim() != 3 or y.shape[:2] != features.shape[:2] or y.shape[-1] != self.y_dim:
            raise ShapeError(
                f"support_y: expected [T, S, {self.y_dim}] matching features {list(features.shape[:2])}, "
                f"got {describe(y)}"
            )
        r = torch.relu(self.encoder(torch.cat([features, y], dim=-1), mask))  # [T, hidden]
        w_mean, b_mean = self._split(self.mean_head(r))
        noise = self.min_noise_std + nn.functional.softplus(self.noise_head(r))
        out = HeadGaussian(w_mean, b_mean, noise_std=noise)
        if self.logvar_head is not None:
            out.w_logvar, out.b_logvar = self._split(self.logvar_head(r))
        return out
