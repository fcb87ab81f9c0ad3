"""Fully connected backbone for regression tasks (MAML's 40-40 sinusoid network)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from bayesmeta._validation import check_positive_int
from bayesmeta.models.batched import Params, batched_linear, vmap_call

__all__ = ["MLP"]


class MLP(nn.Module):
    """``in_features -> hidden... -> out_features`` with ReLU; safe under ``vmap`` (no buffers).

    The last layer is ``self.head`` so that head-only adaptation (ANIL) can name it; everything
    before it is ``self.body``. With ``out_features=None`` there is no head and the network is a
    feature extractor (for ProtoNet, VERSA, DKT), so every parameter is used.

    Args:
        in_features: D, size of the last input dimension.
        out_features: Dy (regression) or C (classification logits); ``None`` for no head.
        hidden: widths of the hidden layers; ``()`` gives a linear model.
        activation: module class used between layers.

    Attributes:
        context_mode: ``None``: examples are processed independently (no set normalization;
            declared on the class so a lookup does not go through ``Module.__getattr__``).

    Shapes:
        ``forward``: ``[..., D] -> [..., out_features]`` (``[..., feature_dim]`` without head).
    """

    context_mode: str | None = None

    def __init__(
        self,
        in_features: int,
        out_features: int | None,
        hidden: Sequence[int] = (40, 40),
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        check_positive_int("in_features", in_features)
        if out_features is not None:
            check_positive_int("out_features", out_features)
        for h in hidden:
            check_positive_int("hidden", h)
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), activation()]
            width = h
        self.in_features = in_features
        self.out_features = out_features
        #: per-example input shape, checked by learners at their boundary
        self.input_shape: tuple[int | None, ...] = (in_features,)
        self.feature_dim = width
        self.body = nn.Sequential(*layers)
        self.head: nn.Linear | None = None if out_features is None else nn.Linear(width, out_features)
        # the batched forward applies activations as they are: only parameter-free ones
        self._batchable = not any(True for a in self.body if not isinstance(a, nn.Linear) for _ in a.parameters())
        # the batched forward's layers in order: (weight name, bias name) of a linear layer, or the
        # key of an activation in body (looked up per call, so a replaced activation is used). Built
        # once: the batched forward runs twice per inner step and Module.__getattr__ counts there
        self._plan: tuple[tuple[str, str] | str, ...] = tuple(
            (f"body.{i}.weight", f"body.{i}.bias") if isinstance(a, nn.Linear) else str(i) for i, a in enumerate(self.body)
        ) + ((("head.weight", "head.bias"),) if self.head is not None else ())

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features, ``[..., D] -> [..., feature_dim]``."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.body(x)
        return f if self.head is None else self.head(f)

    def batched_forward(self, params: Params, x: torch.Tensor, context_mask: torch.Tensor | None = None) -> torch.Tensor:
        """T networks at once, task t with parameters ``params[name][t]`` (the inner loop's forward).

        Args:
            params: ``{name: [T, *shape]}`` for every parameter of this MLP.
            x: ``[T, *B, D]``.
            context_mask: ignored (an MLP treats examples independently).

        Returns:
            ``[T, *B, out]``, equal to ``functional_call(self, params_t, x_t)`` for every t.
        """
        if not self._batchable:  # an activation with parameters: the generic route
            return vmap_call(self, params, x)
        h = x
        body = self._modules["body"]._modules  # type: ignore[union-attr]
        for step in self._plan:
            if isinstance(step, tuple):
                h = batched_linear(h, params[step[0]], params.get(step[1]))
            else:
                h = body[step](h)  # parameter-free activation, elementwise
        return h
