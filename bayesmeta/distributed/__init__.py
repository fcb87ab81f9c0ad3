"""Multi-process meta-training and evaluation on ``torch.distributed`` (docs/distributed.md).

``torchrun --standalone --nproc_per_node=N -m bayesmeta train CONFIG --run-dir D`` splits each
meta-batch of tasks across N processes and all-reduces the task-weighted meta-gradients (gloo
on the CPU, nccl on CUDA with one GPU per process); ``bayesmeta evaluate`` under torchrun
splits the test episodes and gathers the per-task results on rank 0. The trajectory and the
per-task results do not depend on the number of processes.
"""

from bayesmeta.distributed.collectives import (
    StepSums,
    allreduce_gradients,
    broadcast_object,
    broadcast_rng,
    gather_objects,
    mark_shared,
    reduce_step,
    run_on_main,
)
from bayesmeta.distributed.context import (
    BACKENDS,
    DistContext,
    init_distributed,
    launched,
    shutdown,
)
from bayesmeta.distributed.sharding import (
    check_meta_batch_size,
    check_shardable,
    owns_episode,
    shard_batch,
    shard_bounds,
)

__all__ = [
    "BACKENDS",
    "DistContext",
    "init_distributed",
    "launched",
    "shutdown",
    "shard_bounds",
    "shard_batch",
    "check_shardable",
    "check_meta_batch_size",
    "owns_episode",
    "reduce_step",
    "allreduce_gradients",
    "StepSums",
    "mark_shared",
    "broadcast_rng",
    "broadcast_object",
    "gather_objects",
    "run_on_main",
]
