"""The Conv4 backbone of MAML / ProtoNets for 28x28 images, with task-local normalization."""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bayesmeta._validation import check_positive_int
from bayesmeta.exceptions import CheckpointError, ConfigError, ShapeError
from bayesmeta.models.batched import (
    Params,
    batched_conv2d,
    batched_linear,
    channel_affine,
    sub_params,
)
from bayesmeta.models.norm import (
    MEAN_REMOVING_NORMS,
    NORMS,
    BatchStatNorm2d,
    ContextNorm2d,
    Norm,
    TaskNorm2d,
    batch_stat_norm,
    make_norm,
    task_norm,
)

__all__ = ["BatchStatNorm2d", "Conv4", "DEFAULT_NORM", "TaskNorm2d"]

#: The default ``norm`` of :class:`Conv4`: task-local, and the best of the task-local options on
#: Omniglot (docs/benchmarks.md, "Normalization").
DEFAULT_NORM: Norm = "task"


class Conv4(nn.Module):
    """Four blocks of conv3x3(``hidden``) -> norm -> ReLU -> maxpool2, then an optional linear head.

    A 28x28 input shrinks to 14, 7, 3, 1, so the flattened feature size is ``hidden``.

    Args:
        in_channels: image channels (1 for Omniglot).
        out_features: size of the linear head (C logits for MAML); ``None`` for an embedding
            network without head (ProtoNets), whose output is the ``hidden``-d features.
        hidden: filters per block (64 in the papers).
        norm: ``"task"`` (TaskNorm-I: the task's support statistics blended with each example's
            own, the default), ``"group"``, ``"instance"``, ``"layer"``, ``"none"``, or
            ``"batch"`` (transductive batch statistics of the examples given with one task, an
            explicit opt-in). See :mod:`bayesmeta.models.norm`.

    Shapes:
        ``forward(x, context_mask=None)``: ``[*B, N, in_channels, 28, 28] -> [*B, N, out]``
        (``out`` = ``out_features`` or ``hidden``). With a context norm (``"task"``,
        ``"batch"``), dim ``-4`` is the set of one task's examples and statistics are taken per
        leading index ``*B`` over the examples where ``context_mask`` ``[*B, N]`` is True (all
        N when ``None``); a plain ``[N, C, H, W]`` input is one task. Per-example norms accept
        any leading dims. Learners call it through :mod:`bayesmeta.models.context`, which
        picks the context (the support set) for them.
    """

    # Version 2: context norms are per task (version 1, bayesmeta 0.1: norm="batch" took its
    # statistics over every example of a call, across tasks), and convs before a mean-removing
    # norm have no bias. See _load_from_state_dict.
    _version = 2

    def __init__(
        self,
        in_channels: int = 1,
        out_features: int | None = None,
        hidden: int = 64,
        norm: Norm = DEFAULT_NORM,
    ) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_positive_int("hidden", hidden)
        if norm not in NORMS:
            raise ConfigError(f"norm: expected one of {', '.join(repr(n) for n in NORMS)}, got {norm!r}")
        self.norm = norm
        #: how learners pick the normalization context (bayesmeta.models.context)
        self.context_mode: str | None = {"task": "support", "batch": "self"}.get(norm)
        # A per-channel bias before a norm that subtracts a per-channel mean has no effect (and
        # an exactly zero gradient), so those convs have none.
        conv_bias = norm not in MEAN_REMOVING_NORMS
        blocks: list[nn.Module] = []
        ch = in_channels
        for _ in range(4):
            blocks += [nn.Conv2d(ch, hidden, 3, padding=1, bias=conv_bias), make_norm(norm, hidden), nn.ReLU(), nn.MaxPool2d(2)]
            ch = hidden
        self.body = nn.Sequential(*blocks, nn.Flatten())
        self.feature_dim = hidden
        self.in_channels = in_channels
        self.out_features = out_features
        # With a head, only 28x28 inputs shrink to the 1x1 map the head is sized for; without
        # one, any image of at least 16x16 gives (larger) embeddings.
        self.input_shape: tuple[int | None, ...] = (in_channels, 28, 28) if out_features is not None else (in_channels, None, None)
        self.head: nn.Module | None = None
        if out_features is not None:
            check_positive_int("out_features", out_features)
            self.head = nn.Linear(hidden, out_features)

    def features(self, x: torch.Tensor, context_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Flattened conv features, ``[*B, N, C, H, W] -> [*B, N, hidden]``.

        Args:
            x: images; for per-example norms any number (>= 0) of leading dims.
            context_mask: ``[*B, N]`` bool, the examples whose statistics normalize their task
                (context norms only; ``None``: all of them).
        """
        if x.dim() < 3:
            raise ShapeError(f"x: expected images [..., C, H, W], got shape {list(x.shape)}")
        lead = x.shape[:-3]
        if self.context_mode is None:
            f = self.body(x.reshape(-1, *x.shape[-3:]))
            return f.reshape(*lead, f.shape[-1])
        if x.dim() < 4:
            raise ShapeError(
                f"x: norm={self.norm!r} normalizes over a task's set of examples; expected "
                f"[..., N, C, H, W], got shape {list(x.shape)}"
            )
        if context_mask is not None and tuple(context_mask.shape) != tuple(lead):
            raise ShapeError(f"context_mask: expected shape {list(lead)} ([*B, N]), got {list(context_mask.shape)}")
        n = x.shape[-4]
        h = x.reshape(-1, *x.shape[-3:])  # [G*N, C, H, W]
        g = h.shape[0] // n if n else 0
        mask = None if context_mask is None else context_mask.reshape(g, n)
        for layer in self.body:
            if isinstance(layer, ContextNorm2d):
                h = layer(h.reshape(g, n, *h.shape[1:]), mask).reshape(g * n, *h.shape[1:])
            else:
                h = layer(h)
        return h.reshape(*lead, h.shape[-1])

    def forward(self, x: torch.Tensor, context_mask: torch.Tensor | None = None) -> torch.Tensor:
        f = self.features(x, context_mask)
        return f if self.head is None else self.head(f)

    def batched_forward(self, params: Params, x: torch.Tensor, context_mask: torch.Tensor | None = None) -> torch.Tensor:
        """T networks at once, task t with parameters ``params[name][t]`` (the inner loop's forward).

        The convolutions of all tasks run as one grouped convolution over activations laid out
        ``[N, T, C, H, W]``; a context norm takes task t's statistics from task t's examples
        where ``context_mask[t]`` is True, exactly as :meth:`features` does for one task.

        Args:
            params: ``{name: [T, *shape]}`` for every parameter of this Conv4.
            x: ``[T, N, C, H, W]``.
            context_mask: ``[T, N]`` bool (context norms), or ``None`` for all N.

        Returns:
            ``[T, N, out]``, equal to ``functional_call(self, params_t, (x_t, context_mask_t))``.
        """
        if x.dim() != 5:
            raise ShapeError(f"x: expected [T, N, C, H, W] for the batched forward, got shape {list(x.shape)}")
        t, n = x.shape[:2]
        h = x.transpose(0, 1).contiguous()  # [N, T, C, H, W]: each task's channels adjacent
        for i, layer in enumerate(self.body):
            p = sub_params(params, f"body.{i}.")
            if isinstance(layer, nn.Conv2d):
                h = batched_conv2d(h, p["weight"], p.get("bias"), layer)
            elif isinstance(layer, TaskNorm2d):
                h = task_norm(
                    h.transpose(0, 1), context_mask, p["weight"], p["bias"], p["alpha_scale"], p["alpha_offset"], layer.eps
                ).transpose(0, 1)
            elif isinstance(layer, BatchStatNorm2d):
                h = batch_stat_norm(h.transpose(0, 1), context_mask, p["weight"], p["bias"], layer.eps).transpose(0, 1)
            elif isinstance(layer, nn.GroupNorm):
                shape = h.shape
                h = F.group_norm(h.reshape(n * t, *shape[2:]), layer.num_groups, None, None, layer.eps).reshape(shape)
                if layer.affine:
                    h = channel_affine(h, p["weight"], p["bias"])
            elif isinstance(layer, nn.MaxPool2d):
                c = h.shape[2]
                h = layer(h.reshape(n, t * c, *h.shape[3:]))
                h = h.reshape(n, t, c, *h.shape[2:])
            elif isinstance(layer, nn.Flatten):
                h = h.reshape(n, t, -1)
            else:  # ReLU, Identity: parameter-free and elementwise
                h = layer(h)
        feats = h.transpose(0, 1)  # [T, N, hidden]
        if self.head is None:
            return feats
        return batched_linear(feats, params["head.weight"], params.get("head.bias"))

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        version = local_metadata.get("version")
        if version is None or version < 2:
            self._upgrade_v1(state_dict, prefix)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def _upgrade_v1(self, state_dict: dict[str, Any], prefix: str) -> None:
        """Load weights saved by bayesmeta 0.1 (Conv4 version 1), never silently changing meaning."""
        old_has_bias = f"{prefix}body.0.bias" in state_dict
        old_has_alpha = f"{prefix}body.1.alpha_scale" in state_dict
        if old_has_alpha:
            return  # written by this version without metadata: nothing to upgrade
        old_batch = old_has_bias and f"{prefix}body.1.weight" in state_dict and f"{prefix}body.1.running_mean" not in state_dict
        if self.norm in ("group", "layer", "none"):
            return  # same parameters and same meaning as in version 1
        if self.norm == "batch" and old_batch:
            for i in range(0, 16, 4):
                state_dict.pop(f"{prefix}body.{i}.bias", None)  # exactly redundant before a batch norm
            warnings.warn(
                "Conv4: these weights were saved by bayesmeta 0.1, whose norm='batch' took batch "
                "statistics across every task and query of a call. They are loaded with "
                "norm='batch' as it is now: statistics per task, from the support set while "
                "adapting and from the task's own query set while predicting (still transductive). "
                "Predictions therefore differ from 0.1's and no longer depend on the other tasks. "
                "Retrain with norm='task' for predictions that depend on the support set only.",
                UserWarning,
                stacklevel=2,
            )
            return
        raise CheckpointError(
            f"Conv4: these weights were saved by bayesmeta 0.1, whose Conv4 took batch statistics "
            f"across every task and query of a call (norm='batch', then the default); they cannot "
            f"be loaded into norm={self.norm!r} without changing what they compute. To continue: "
            f"retrain (the default is now norm='task', task-local), or load them from Python into "
            f"Conv4(norm='batch'), which keeps batch statistics but per task (a warning says what "
            f"changed)."
        )
