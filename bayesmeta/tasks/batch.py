"""``TaskBatch`` and ``SupportSet``: the episode containers every learner consumes.

Shapes (DESIGN.md section 3): T tasks, S support points, Q query points, C = ``n_way`` classes.

- classification: ``x`` is ``[T, N, *feature_shape]`` float, ``y`` is ``[T, N]`` int64 class index
  in ``[0, n_way)``;
- regression: ``x`` is ``[T, N, *feature_shape]`` float, ``y`` is ``[T, N, Dy]`` float.

Optional masks ``[T, N]`` (bool, True = the point is present) describe ragged sets padded to a
common size. A batch validates itself on construction so that a learner never meets a bad shape
deep inside ``vmap``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from functools import cached_property

import torch

from bayesmeta._validation import check_finite, describe
from bayesmeta.devices import resolve_device, resolve_dtype
from bayesmeta.exceptions import InvalidValueError, ShapeError

__all__ = ["SupportSet", "TaskBatch", "full_mask"]


def full_mask(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``mask`` (``[T, N]`` bool), or all-True ``[T, N]`` for the leading dims of ``x`` when it is ``None``."""
    if mask is not None:
        return mask
    return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)


def _check_set(
    prefix: str,
    x: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor | None,
    n_way: int | None,
) -> None:
    """Validate one (x, y, mask) set; ``prefix`` is ``support`` or ``query`` for messages."""
    for name, t in ((f"{prefix}_x", x), (f"{prefix}_y", y)):
        if not isinstance(t, torch.Tensor):
            raise ShapeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if x.dim() < 3:
        raise ShapeError(
            f"{prefix}_x: expected a tensor [T, N, *features] with at least 3 dims, got {describe(x)}"
        )
    if not x.is_floating_point():
        raise InvalidValueError(f"{prefix}_x: expected a floating-point tensor, got {describe(x)}")
    check_finite(f"{prefix}_x", x)
    t_, n_ = x.shape[:2]
    if t_ == 0 or n_ == 0:
        raise ShapeError(
            f"{prefix}_x: expected at least one task and one {prefix} point, got {describe(x)}"
            + (" (an empty context set)" if prefix == "support" and n_ == 0 else "")
        )
    # the mask first: the label check below indexes y with it
    if mask is not None:
        if mask.dtype != torch.bool or mask.shape != (t_, n_):
            raise ShapeError(
                f"{prefix}_mask: expected a bool tensor of shape [T, N] = [{t_}, {n_}], "
                f"got {describe(mask)}"
            )
        empty = (~mask.any(dim=1)).nonzero().flatten()
        if empty.numel():
            raise InvalidValueError(
                f"{prefix}_mask: every task needs at least one present point, but the mask hides "
                f"all points of task(s) {empty.tolist()[:10]}"
            )
    if n_way is not None:
        if y.shape != (t_, n_):
            raise ShapeError(
                f"{prefix}_y: expected class indices of shape [T, N] = [{t_}, {n_}] "
                f"to match {prefix}_x, got {describe(y)}"
            )
        if y.is_floating_point() or y.dtype == torch.bool:
            raise InvalidValueError(
                f"{prefix}_y: expected integer class indices (int64), got {describe(y)}"
            )
        present = y if mask is None else y[mask]
        if present.numel() and (int(present.min()) < 0 or int(present.max()) >= n_way):
            raise InvalidValueError(
                f"{prefix}_y: expected labels in [0, n_way) = [0, {n_way}), got values in "
                f"[{int(present.min())}, {int(present.max())}]"
            )
    else:
        if y.dim() != 3 or y.shape[:2] != (t_, n_):
            raise ShapeError(
                f"{prefix}_y: expected regression targets of shape [T, N, Dy] with "
                f"[T, N] = [{t_}, {n_}] to match {prefix}_x, got {describe(y)}"
            )
        if not y.is_floating_point():
            raise InvalidValueError(f"{prefix}_y: expected a floating-point tensor, got {describe(y)}")
        check_finite(f"{prefix}_y", y)


@dataclass(frozen=True)
class SupportSet:
    """The observed part of T tasks: what ``MetaLearner.adapt`` conditions on.

    Attributes:
        x: ``[T, S, *features]`` inputs.
        y: ``[T, S]`` int64 labels (classification) or ``[T, S, Dy]`` float targets (regression).
        mask: optional ``[T, S]`` bool, True where a point is present.
        n_way: number of classes C for classification, ``None`` for regression.
    """

    x: torch.Tensor
    y: torch.Tensor
    mask: torch.Tensor | None = None
    n_way: int | None = None

    def __post_init__(self) -> None:
        if self.n_way is not None and (isinstance(self.n_way, bool) or int(self.n_way) < 1):
            raise InvalidValueError(f"n_way: expected a positive integer or None, got {self.n_way!r}")
        _check_set("support", self.x, self.y, self.mask, self.n_way)

    @property
    def n_tasks(self) -> int:
        """T, the number of tasks."""
        return self.x.shape[0]

    @property
    def is_classification(self) -> bool:
        """True when ``y`` holds class indices."""
        return self.n_way is not None

    @classmethod
    def _checked(cls, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None, n_way: int | None) -> SupportSet:
        """A set from fields that a :class:`TaskBatch` has already validated: not checked again.

        Validation happens once, at the boundary (``TaskBatch`` construction); the halves a batch
        hands out would otherwise re-run every check (and its device syncs) on each access.
        """
        obj = object.__new__(cls)
        for name, value in (("x", x), ("y", y), ("mask", mask), ("n_way", n_way)):
            object.__setattr__(obj, name, value)
        return obj

    def index(self, idx: slice | torch.Tensor | int) -> SupportSet:
        """The same support set restricted to the tasks ``idx`` (task dimension kept)."""
        idx = slice(idx, idx + 1) if isinstance(idx, int) else idx
        return SupportSet(
            self.x[idx], self.y[idx], None if self.mask is None else self.mask[idx], self.n_way
        )


@dataclass(frozen=True)
class TaskBatch:
    """A batch of T few-shot tasks, each with a support and a query set.

    Attributes:
        support_x: ``[T, S, *features]`` float.
        support_y: ``[T, S]`` int64 (classification) or ``[T, S, Dy]`` float (regression).
        query_x: ``[T, Q, *features]`` float, same feature shape as ``support_x``.
        query_y: ``[T, Q]`` int64 or ``[T, Q, Dy]`` float, matching ``support_y``.
        support_mask: optional ``[T, S]`` bool, True where a support point is present.
        query_mask: optional ``[T, Q]`` bool.
        n_way: C for classification; ``None`` marks a regression batch.

    Raises:
        ShapeError: a field has the wrong shape; the message names the field.
        InvalidValueError: NaN/Inf inputs, labels outside ``[0, n_way)``, an all-hidden mask.
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    support_mask: torch.Tensor | None = None
    query_mask: torch.Tensor | None = None
    n_way: int | None = None

    def __post_init__(self) -> None:
        if self.n_way is not None and (
            isinstance(self.n_way, bool) or not isinstance(self.n_way, int) or self.n_way < 1
        ):
            raise InvalidValueError(f"n_way: expected a positive integer or None, got {self.n_way!r}")
        _check_set("support", self.support_x, self.support_y, self.support_mask, self.n_way)
        sx, qx = self.support_x, self.query_x
        if not isinstance(qx, torch.Tensor) or qx.dim() < 3:
            got = describe(qx) if isinstance(qx, torch.Tensor) else type(qx).__name__
            raise ShapeError(f"query_x: expected a tensor [T, Q, *features] with at least 3 dims, got {got}")
        # query_x against support_x first, so that a wrong T is blamed on query_x, not query_y
        if qx.shape[0] != sx.shape[0]:
            raise ShapeError(
                f"query_x: expected T = {sx.shape[0]} tasks to match support_x, got {describe(qx)}"
            )
        if qx.shape[2:] != sx.shape[2:]:
            raise ShapeError(
                f"query_x: expected feature shape {list(sx.shape[2:])} to match support_x, "
                f"got {describe(qx)}"
            )
        _check_set("query", self.query_x, self.query_y, self.query_mask, self.n_way)
        if self.n_way is None and self.query_y.shape[2] != self.support_y.shape[2]:
            raise ShapeError(
                f"query_y: expected Dy = {self.support_y.shape[2]} to match support_y, "
                f"got {describe(self.query_y)}"
            )

    @property
    def n_tasks(self) -> int:
        """T, the number of tasks."""
        return self.support_x.shape[0]

    @property
    def is_classification(self) -> bool:
        """True when the labels are class indices."""
        return self.n_way is not None

    # The halves are built once per batch (cached) from fields validated in __post_init__.
    @cached_property
    def support(self) -> SupportSet:
        """The support half of the batch, the only thing ``adapt`` may look at."""
        return SupportSet._checked(self.support_x, self.support_y, self.support_mask, self.n_way)

    @cached_property
    def query(self) -> SupportSet:
        """The query half as a :class:`SupportSet` (used by methods that condition on it)."""
        return SupportSet._checked(self.query_x, self.query_y, self.query_mask, self.n_way)

    def joint(self) -> SupportSet:
        """Support and query concatenated along the point axis (``[T, S + Q, ...]``), built once per batch."""
        return self._joint

    @cached_property
    def _joint(self) -> SupportSet:
        def cat_mask(m: torch.Tensor | None, ref: torch.Tensor) -> torch.Tensor:
            return full_mask(ref, m)

        mask = None
        if self.support_mask is not None or self.query_mask is not None:
            mask = torch.cat(
                [cat_mask(self.support_mask, self.support_x), cat_mask(self.query_mask, self.query_x)],
                dim=1,
            )
        # two validated sets with equal T, feature shape and Dy concatenate into a valid set
        return SupportSet._checked(
            torch.cat([self.support_x, self.query_x], dim=1),
            torch.cat([self.support_y, self.query_y], dim=1),
            mask,
            self.n_way,
        )

    def index(self, idx: slice | torch.Tensor | int) -> TaskBatch:
        """The batch restricted to the tasks ``idx`` (task dimension kept)."""
        idx = slice(idx, idx + 1) if isinstance(idx, int) else idx
        kw = {}
        for f in fields(self):
            v = getattr(self, f.name)
            kw[f.name] = v[idx] if isinstance(v, torch.Tensor) else v
        return TaskBatch(**kw)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> TaskBatch:
        """Move tensors to ``device``; cast floating-point tensors (x, regression y) to ``dtype``.

        Raises:
            ConfigError: a device this build or machine lacks (not torch's AssertionError), or a
                dtype other than float32/float64.
        """
        device = None if device is None else resolve_device(device)
        dtype = None if dtype is None else resolve_dtype(dtype)
        kw = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                v = v.to(device=device, dtype=dtype if (dtype is not None and v.is_floating_point()) else None)
            kw[f.name] = v
        return replace(self, **kw)

    def __len__(self) -> int:
        return self.n_tasks
