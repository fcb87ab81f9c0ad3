"""Which tasks of a meta-batch, and which evaluation batches, each process takes.

Training: every process draws the *whole* meta-batch from the run's task generator (the same
seed and state everywhere, so the same tasks in the same order as one process would draw) and
keeps a contiguous block of it by global task index (:func:`shard_bounds`). The blocks differ
by at most one task; each process's loss is a mean over its block, so weighting it by
``n_r / n`` (:func:`shard_batch`) makes the sum over processes the mean over the whole
meta-batch, exactly, for any ``n`` and number of processes (no task is dropped or repeated).

The weighting is exact when a learner's meta-loss is a mean over tasks of per-task terms.
Learners that pool their loss over query *points* (MAML, ProtoNets, VERSA...) are such a mean
when every task has as many present query points; a meta-batch with ragged query sets
(``query_mask`` with different counts per task) is refused in a multi-process run
(:func:`check_shardable`), because the weights would then depend on each learner's normalizer.

Evaluation: batch ``i`` of the episode stream goes to process ``i % world_size``
(:func:`owns_episode`); every process walks the whole stream (episodes are drawn one after
another from one generator) but runs the learner only on its own batches.
"""

from __future__ import annotations

from bayesmeta.distributed.context import DistContext
from bayesmeta.exceptions import ConfigError, InvalidValueError
from bayesmeta.tasks.batch import TaskBatch

__all__ = ["shard_bounds", "shard_batch", "check_shardable", "check_meta_batch_size", "owns_episode"]


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[start, stop)`` of process ``rank``'s block of ``n`` items split over ``world_size``.

    The first ``n % world_size`` processes take one item more; the blocks are contiguous, in rank
    order, and cover ``0..n-1`` exactly once.

    Raises:
        InvalidValueError: ``n < 0``, ``world_size < 1`` or ``rank`` out of range.
    """
    if n < 0 or world_size < 1 or not 0 <= rank < world_size:
        raise InvalidValueError(f"shard_bounds: expected n >= 0 and 0 <= rank < world_size, got n={n}, rank={rank}, world_size={world_size}")
    q, r = divmod(n, world_size)
    start = rank * q + min(rank, r)
    return start, start + q + (1 if rank < r else 0)


def check_meta_batch_size(meta_batch_size: int, world_size: int) -> None:
    """Refuse a meta-batch smaller than the number of processes (some would hold no task).

    Raises:
        ConfigError: ``meta_batch_size < world_size``.
    """
    if meta_batch_size < world_size:
        raise ConfigError(
            f"training.meta_batch_size: expected at least one task per process, got {meta_batch_size} tasks "
            f"for {world_size} processes; use fewer processes or a larger meta-batch"
        )


def check_shardable(batch: TaskBatch) -> None:
    """Refuse a meta-batch whose tasks have different numbers of present query points.

    Raises:
        InvalidValueError: ragged ``query_mask`` (see the module docstring).
    """
    if batch.query_mask is None:
        return
    counts = batch.query_mask.sum(1)
    if bool((counts != counts[0]).any()):
        raise InvalidValueError(
            f"query_mask: a multi-process run needs the same number of query points in every task of a "
            f"meta-batch (the loss of each process is weighted by its share of tasks), got counts "
            f"{counts.tolist()}; train this task source in one process"
        )


def shard_batch(batch: TaskBatch, ctx: DistContext | None) -> tuple[TaskBatch, float]:
    """This process's block of a meta-batch and its weight ``n_r / n``.

    Args:
        batch: the whole meta-batch, ``n`` tasks, identical on every process.
        ctx: this process, or ``None`` for a single process (the batch itself, weight 1).

    Returns:
        ``(shard, weight)``.
    """
    if ctx is None or ctx.world_size == 1:
        return batch, 1.0
    check_shardable(batch)
    n = batch.n_tasks
    start, stop = shard_bounds(n, ctx.rank, ctx.world_size)
    if stop <= start:
        check_meta_batch_size(n, ctx.world_size)
    return batch.index(slice(start, stop)), (stop - start) / n



def owns_episode(index: int, ctx: DistContext | None) -> bool:
    """Whether this process evaluates evaluation batch ``index`` (round robin over processes)."""
    return ctx is None or index % ctx.world_size == ctx.rank
