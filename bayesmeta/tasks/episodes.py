"""Seeded, reproducible evaluation episodes from any task source.

Two methods are compared fairly only on the very same tasks: :func:`fixed_episodes` draws them
from a private ``torch.Generator(seed)``, so the same ``(source, n_episodes, seed,
tasks_per_batch)`` gives identical tensors in every call and every process, and the global RNG
is left untouched.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from bayesmeta._validation import check_positive_int
from bayesmeta.exceptions import InvalidValueError
from bayesmeta.tasks.batch import TaskBatch

__all__ = ["TaskSource", "fixed_episodes"]


@runtime_checkable
class TaskSource(Protocol):
    """Anything that samples task batches: ``Sinusoid``, ``LinearGaussian``, ``FewShotSampler``."""

    def sample(self, n_tasks: int, generator: torch.Generator | None = None) -> TaskBatch:
        """Sample ``n_tasks`` tasks using only ``generator`` for randomness."""
        ...


def fixed_episodes(
    source: TaskSource, n_episodes: int, seed: int, tasks_per_batch: int = 1
) -> list[TaskBatch]:
    """A reproducible list of evaluation batches.

    Batches are drawn one after another from one generator seeded with ``seed``, so the first k
    batches do not depend on ``n_episodes`` (asking for more episodes extends the list). They do
    depend on ``tasks_per_batch``.

    Args:
        source: a task source with ``sample(n_tasks, generator)``.
        n_episodes: number of batches.
        seed: seed of the private CPU generator.
        tasks_per_batch: T of every batch.

    Returns:
        ``n_episodes`` :class:`TaskBatch` es of ``tasks_per_batch`` tasks each.

    Raises:
        InvalidValueError: a non-positive count, or a source without ``sample``.
    """
    check_positive_int("n_episodes", n_episodes)
    check_positive_int("tasks_per_batch", tasks_per_batch)
    if not isinstance(source, TaskSource):
        raise InvalidValueError(
            f"source: expected a task source with sample(n_tasks, generator), got {type(source).__name__}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidValueError(f"seed: expected an integer, got {seed!r}")
    generator = torch.Generator().manual_seed(seed)
    return [source.sample(tasks_per_batch, generator) for _ in range(n_episodes)]
