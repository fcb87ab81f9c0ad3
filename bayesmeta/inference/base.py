"""The ``MetaLearner`` interface every method implements (DESIGN.md sections 1 and 3).

A learner holds the meta-parameters theta (an ``nn.Module``'s parameters). For T tasks at once:

- ``meta_loss(batch) -> StepOutput``: the outer objective, a scalar to minimize over theta;
- ``adapt(support) -> TaskPosterior``: q(phi_t | support_t) for every task; pure, it returns a
  new object and mutates neither parameters nor buffers;
- ``predict(posterior, query_x) -> Predictive``: the posterior predictive at ``[T, Q, ...]``.

``forward(batch)`` is ``predict(adapt(batch.support), batch.query_x)``.
"""

from __future__ import annotations

import abc
import inspect
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
from torch import nn

from bayesmeta.exceptions import ConfigError, InvalidValueError, ShapeError
from bayesmeta.predictive import Predictive
from bayesmeta.tasks.batch import SupportSet, TaskBatch

__all__ = ["MetaLearner", "StepOutput", "TaskPosterior", "constructor_options"]

#: Constructor arguments that are objects built by the caller, not options a config can set.
_NOT_OPTIONS = frozenset({"self", "model", "backbone"})


def constructor_options(cls: type) -> tuple[str, ...]:
    """The keyword options of ``cls.__init__``, in signature order, without the backbone argument.

    Args:
        cls: a learner class.

    Returns:
        Parameter names other than ``self``, ``model``/``backbone`` and ``*args``/``**kwargs``.
    """
    params = inspect.signature(cls.__init__).parameters.values()  # type: ignore[misc]
    keep = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return tuple(p.name for p in params if p.name not in _NOT_OPTIONS and p.kind in keep)

TaskKind = Literal["classification", "regression"]


@dataclass
class StepOutput:
    """What one evaluation of the meta-objective returns.

    Attributes:
        loss: scalar tensor to minimize (carries the graph to the meta-parameters).
        metrics: detached float diagnostics for logging (``"accuracy"``, ``"mse"``...).
    """

    loss: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)


class TaskPosterior:
    """Base class of the per-task posteriors q(phi_t | support) that ``adapt`` returns.

    Each learner defines its own subclass (a point estimate, particles, a Gaussian, prototypes);
    the only shared promise is the number of tasks it covers.
    """

    @property
    def n_tasks(self) -> int:
        """T."""
        raise NotImplementedError


class MetaLearner(nn.Module, abc.ABC):
    """Abstract base of every meta-learner.

    Subclasses pass ``task_kind`` to ``__init__`` (``"classification"``, ``"regression"``, or
    ``None`` for a learner that handles both and dispatches on the batch) so that batches of the
    wrong kind are refused with a clear error at the boundary.
    """

    #: Names of the constructor options a config may set; used by the config layer. Derived
    #: from the constructor's signature for every subclass (:func:`constructor_options`), so
    #: that it cannot drift from the options the constructor actually takes.
    config_keys: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "config_keys" not in cls.__dict__:
            cls.config_keys = constructor_options(cls)

    def __init__(self, task_kind: TaskKind | None) -> None:
        super().__init__()
        if task_kind not in ("classification", "regression", None):
            raise ConfigError(
                f"task_kind: expected 'classification', 'regression' or None, got {task_kind!r}"
            )
        self.task_kind: TaskKind | None = task_kind

    # ------------------------------------------------------------ interface
    @abc.abstractmethod
    def meta_loss(self, batch: TaskBatch) -> StepOutput:
        """Outer objective on a meta-batch of T tasks."""

    @abc.abstractmethod
    def adapt(self, support: SupportSet) -> TaskPosterior:
        """Condition on each task's support set; must not mutate the learner."""

    @abc.abstractmethod
    def predict(self, posterior: TaskPosterior, query_x: torch.Tensor) -> Predictive:
        """Posterior predictive at ``query_x`` (``[T, Q, *features]``)."""

    def forward(self, batch: TaskBatch) -> Predictive:
        """``predict(adapt(batch.support), batch.query_x)``."""
        return self.predict(self.adapt(batch.support), batch.query_x)

    # -------------------------------------------------------------- helpers
    def check_batch(self, batch: TaskBatch | SupportSet, name: str = "batch") -> None:
        """Raise :class:`ShapeError` if the batch's kind does not match the learner's."""
        if not isinstance(batch, (TaskBatch, SupportSet)):
            raise ShapeError(f"{name}: expected a TaskBatch or SupportSet, got {type(batch).__name__}")
        self._check_placement(batch.x if isinstance(batch, SupportSet) else batch.support_x, name)
        if self.task_kind is None:
            return
        is_cls = batch.n_way is not None
        if is_cls != (self.task_kind == "classification"):
            got = "classification (n_way set)" if is_cls else "regression (n_way None)"
            raise ShapeError(f"{name}: {type(self).__name__} is a {self.task_kind} learner, got a {got} batch")

    def _check_placement(self, x: torch.Tensor, name: str) -> None:
        """Raise :class:`InvalidValueError` if ``x`` is on another device or float dtype than the
        learner (torch's own error names neither); the trainer and evaluator convert at the
        boundary with :func:`bayesmeta.devices.batch_to_learner`, direct callers use ``batch.to``."""
        if not isinstance(x, torch.Tensor):
            return
        first = self._placement_reference()
        if first is None:
            return
        if x.device == first.device and (not x.is_floating_point() or x.dtype == first.dtype):
            return  # the common case, without walking every parameter on every step
        params = [t for t in self.parameters() if t.is_floating_point()]
        p = params[0]
        # A learner may keep a few scalars in another dtype than its backbone (a float32 noise
        # next to a .double() model): only data matching none of the parameters is refused.
        wrong_dtype = x.is_floating_point() and all(t.dtype != x.dtype for t in params)
        if x.device != p.device or wrong_dtype:
            raise InvalidValueError(
                f"{name}: expected inputs on the learner's device and dtype ({p.device}, "
                f"{str(p.dtype).removeprefix('torch.')}), got {x.device}, {str(x.dtype).removeprefix('torch.')}; "
                f"move the data with {name}.to(device, dtype) or the learner with learner.to(...)"
            )

    def _placement_reference(self) -> torch.Tensor | None:
        """A floating parameter whose device and dtype inputs normally match (None: no parameters)."""
        return next((t for t in self.parameters() if t.is_floating_point()), None)

    def check_query_x(self, posterior: TaskPosterior, query_x: torch.Tensor) -> None:
        """Raise :class:`ShapeError` unless ``query_x`` is ``[T, Q, ...]`` with the posterior's T."""
        if not isinstance(query_x, torch.Tensor) or query_x.dim() < 3:
            got = list(query_x.shape) if isinstance(query_x, torch.Tensor) else type(query_x).__name__
            raise ShapeError(f"query_x: expected a tensor [T, Q, *features], got {got}")
        if query_x.shape[0] != posterior.n_tasks:
            raise ShapeError(
                f"query_x: expected T = {posterior.n_tasks} tasks to match the posterior, got shape {list(query_x.shape)}"
            )
