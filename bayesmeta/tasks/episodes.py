"""Seeded, reproducible evaluation episodes from any task source.

Two methods are compared fairly only on the very same tasks: :func:`fixed_episodes` draws them
from a private ``torch.Generator(seed)``, so the same ``(source, n_episodes, seed,
tasks_per_batch)`` gives identical tensors in every call and every process, and the global RNG
is left untouched.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import torch

from bayesmeta._validation import check_positive_int
from bayesmeta.exceptions import InvalidValueError, ShapeError
from bayesmeta.tasks.batch import TaskBatch

__all__ = ["TaskSource", "concat_tasks", "fixed_episodes", "iter_episodes"]


@runtime_checkable
class TaskSource(Protocol):
    """Anything that samples task batches: ``Sinusoid``, ``LinearGaussian``, ``FewShotSampler``."""

    def sample(self, n_tasks: int, generator: torch.Generator | None = None) -> TaskBatch:
        """Sample ``n_tasks`` tasks using only ``generator`` for randomness."""
        ...


def fixed_episodes(
    source: TaskSource, n_episodes: int, seed: int, tasks_per_batch: int = 1
) -> list[TaskBatch]:
    """A reproducible list of evaluation episodes (tasks), grouped into batches for compute.

    Every episode is drawn on its own (``source.sample(1, generator)``) from one generator
    seeded with ``seed``, then consecutive episodes are stacked into batches of
    ``tasks_per_batch`` (the last batch may be smaller). So the episodes depend only on
    ``(source, seed)``: not on the batching, and the first k do not depend on ``n_episodes``.
    Two methods evaluated with the same seed see the very same tasks, whatever their batch size.

    Args:
        source: a task source with ``sample(n_tasks, generator)``.
        n_episodes: number of episodes (tasks) in total.
        seed: seed of the private CPU generator.
        tasks_per_batch: T of every batch but possibly the last.

    Returns:
        ``ceil(n_episodes / tasks_per_batch)`` :class:`TaskBatch` es holding ``n_episodes``
        tasks in all.

    Raises:
        InvalidValueError: a non-positive count, or a source without ``sample``.
    """
    return list(iter_episodes(source, n_episodes, seed, tasks_per_batch))


def iter_episodes(
    source: TaskSource, n_episodes: int, seed: int, tasks_per_batch: int = 1
) -> Iterator[TaskBatch]:
    """The batches of :func:`fixed_episodes`, drawn one batch at a time.

    The same tensors as ``fixed_episodes(source, n_episodes, seed, tasks_per_batch)``, but only
    one batch is held at a time, so evaluation on hundreds of image episodes does not keep them
    all in memory. Arguments are checked on the call, before the first batch is drawn.

    Raises:
        InvalidValueError: a non-positive count, a non-integer seed, or a source without ``sample``.
    """
    check_positive_int("n_episodes", n_episodes)
    check_positive_int("tasks_per_batch", tasks_per_batch)
    if not isinstance(source, TaskSource):
        raise InvalidValueError(
            f"source: expected a task source with sample(n_tasks, generator), got {type(source).__name__}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidValueError(f"seed: expected an integer, got {seed!r}")
    return _draw_episodes(source, n_episodes, seed, tasks_per_batch)


def _draw_episodes(source: TaskSource, n_episodes: int, seed: int, tasks_per_batch: int) -> Iterator[TaskBatch]:
    generator = torch.Generator().manual_seed(seed)
    for start in range(0, n_episodes, tasks_per_batch):
        n = min(tasks_per_batch, n_episodes - start)
        yield concat_tasks([source.sample(1, generator) for _ in range(n)])


def concat_tasks(batches: list[TaskBatch]) -> TaskBatch:
    """Stack task batches of one shape along the task dimension.

    Raises:
        ShapeError: the batches differ in shape, kind or ``n_way``.
    """
    if len(batches) == 1:
        return batches[0]
    first = batches[0]
    for b in batches[1:]:
        if b.n_way != first.n_way or b.support_x.shape[1:] != first.support_x.shape[1:] or (
            b.query_x.shape[1:] != first.query_x.shape[1:]
        ):
            raise ShapeError(
                f"batches: cannot stack tasks of different shapes or n_way: support_x "
                f"{list(first.support_x.shape)} vs {list(b.support_x.shape)}, n_way {first.n_way} vs {b.n_way}"
            )

    def cat_mask(name: str, x_name: str) -> torch.Tensor | None:
        masks = [getattr(b, name) for b in batches]
        if all(m is None for m in masks):
            return None
        return torch.cat(
            [m if m is not None else torch.ones(getattr(b, x_name).shape[:2], dtype=torch.bool)
             for m, b in zip(masks, batches)]
        )

    return TaskBatch(
        support_x=torch.cat([b.support_x for b in batches]),
        support_y=torch.cat([b.support_y for b in batches]),
        query_x=torch.cat([b.query_x for b in batches]),
        query_y=torch.cat([b.query_y for b in batches]),
        support_mask=cat_mask("support_mask", "support_x"),
        query_mask=cat_mask("query_mask", "query_x"),
        n_way=first.n_way,
    )
