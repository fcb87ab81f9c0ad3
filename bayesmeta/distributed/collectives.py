"""The collectives a multi-process run needs, on ``torch.distributed`` directly.

Why not ``DistributedDataParallel``: the meta-objective is ``learner.meta_loss(batch)``, not a
module's ``forward``; the inner loop reads the parameters through ``torch.func.functional_call``
(second-order MAML differentiates through it); some parameters get no gradient in a given task
kind (a regression noise in a classification run); and the shards of a meta-batch not divisible by
the number of processes must be weighted by their task counts, where DDP averages with equal
weights. So each process runs an ordinary ``backward`` on its shard, and :func:`allreduce_gradients`
sums the weighted gradients in one flat buffer per dtype (the bucketing DDP would do, without
the overlap with backward, which these models are too small to need). The loss, the
diagnostics, the out-of-time flag and a fingerprint of each process's RNG state ride in the same
buffer (:func:`reduce_step`), so a meta-step costs one collective.

Every collective is wrapped so that a peer that died (its connections close) or a group that
timed out surfaces as :class:`~bayesmeta.exceptions.DistributedError` naming this rank and what
it was doing, never a raw backend traceback.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from bayesmeta.distributed.context import DistContext
from bayesmeta.exceptions import DistributedError

__all__ = [
    "collective",
    "StepSums",
    "reduce_step",
    "allreduce_gradients",
    "mark_shared",
    "broadcast_rng",
    "broadcast_object",
    "gather_objects",
    "run_on_main",
]

T = TypeVar("T")

#: Attribute set on an exception that rank 0 raised and every other rank re-raises, so that only
#: rank 0 prints it.
FROM_MAIN = "_bayesmeta_raised_on_rank0"


@contextlib.contextmanager
def collective(ctx: DistContext, what: str) -> Iterator[None]:
    """Turn a failed collective into a :class:`DistributedError` that says who and what.

    Args:
        ctx: this process.
        what: what the processes were doing ("the gradient all-reduce at step 12").
    """
    try:
        yield
    except DistributedError:
        raise
    except (RuntimeError, ValueError, TimeoutError) as e:  # DistBackendError derives from RuntimeError
        detail = " ".join(str(e).split())[:300]
        raise DistributedError(
            f"{ctx.describe()}: {what} failed: another process died or stopped answering ({detail}); "
            f"the run stops here, its last checkpoint left as it was; run the same command again to resume "
            f"from it (torchrun --max-restarts does that by itself)"
        ) from None


@dataclass
class StepSums:
    """What :func:`reduce_step` returns: the whole meta-batch's numbers, the same on every process.

    Attributes:
        loss: the task-weighted sum of the processes' losses (NaN if any process's is).
        metrics: the task-weighted sums of the processes' diagnostics.
        flag: whether any process raised its flag (out of time).
        rng_in_sync: whether every process's global RNG is in the same state.
    """

    loss: float
    metrics: dict[str, float]
    flag: bool
    rng_in_sync: bool


#: The RNG fingerprint travels as 16 chunks of 4 bits, each with its square: the processes agree
#: iff ``N * sum(c^2) == (sum c)^2`` for every chunk (equality case of Cauchy-Schwarz), and those
#: sums stay exact integers in float32 for up to 2**24 / 225 processes.
_CHUNKS, _CHUNK_BITS = 16, 4


def _rng_chunks(ctx: DistContext) -> list[float]:
    h = hashlib.sha256()
    for s in _rng_states(ctx):
        h.update(s.cpu().numpy().tobytes())
    v = int.from_bytes(h.digest()[:8], "little")
    chunks = [float((v >> (_CHUNK_BITS * i)) & ((1 << _CHUNK_BITS) - 1)) for i in range(_CHUNKS)]
    return chunks + [c * c for c in chunks]


def _chunks_agree(summed: list[float], world_size: int) -> bool:
    sums, squares = summed[:_CHUNKS], summed[_CHUNKS:]
    return all(world_size * q == s * s for s, q in zip(sums, squares))


def reduce_step(
    ctx: DistContext,
    params: Iterable[torch.nn.Parameter],
    weight: float,
    loss: torch.Tensor,
    metrics: dict[str, float],
    flag: bool,
    step: int,
) -> StepSums:
    """One all-reduce per meta-step: the task-weighted gradients, loss and metrics, a flag that
    every process must agree on, and a fingerprint of every process's RNG state.

    After it, every ``p.grad`` is the sum over processes of ``weight_r * grad_r`` (a parameter no
    process produced a gradient for keeps ``grad = None``, as in one process, so the optimizer
    skips it; one that only some processes reached gets zeros from the others).

    Args:
        ctx: this process.
        params: the learner's parameters (the same order on every process), after ``backward``.
        weight: this shard's share of the meta-batch's tasks, ``n_r / n``.
        loss: this shard's scalar meta-loss (a mean over its tasks).
        metrics: this shard's diagnostics (the same keys on every process).
        flag: a per-process condition that every process must agree on (out of time).
        step: the step being taken, for error messages.

    Returns:
        :class:`StepSums`. NaN on one process makes the loss NaN on all, so every process stops
        at the same step.
    """
    keys = sorted(metrics)
    head = [weight * float(loss.detach())] + [weight * float(metrics[k]) for k in keys] + [1.0 if flag else 0.0]
    extra = head + _rng_chunks(ctx)
    summed = allreduce_gradients(ctx, params, weight, step, extra=extra)
    n = len(keys)
    return StepSums(
        loss=summed[0],
        metrics=dict(zip(keys, summed[1 : 1 + n])),
        flag=summed[1 + n] > 0,
        rng_in_sync=_chunks_agree(summed[2 + n :], ctx.world_size),
    )


def _buckets(params: Iterable[torch.nn.Parameter]) -> dict[tuple[torch.device, torch.dtype], list[torch.nn.Parameter]]:
    groups: dict[tuple[torch.device, torch.dtype], list[torch.nn.Parameter]] = {}
    for p in params:
        if p.requires_grad:
            groups.setdefault((p.device, p.dtype), []).append(p)
    # the widest dtype first: it carries the extra numbers of reduce_step
    return dict(sorted(groups.items(), key=lambda kv: -torch.finfo(kv[0][1]).bits))


def allreduce_gradients(
    ctx: DistContext, params: Iterable[torch.nn.Parameter], weight: float, step: int, extra: list[float] | None = None
) -> list[float]:
    """Replace every ``p.grad`` by the sum over processes of ``weight_r * grad_r``.

    One flat buffer per (device, dtype) of the parameters, one all-reduce each (one in all for
    a learner of one dtype). See :func:`reduce_step` for parameters without a gradient.

    Args:
        ctx: this process.
        params: the learner's parameters (the same order on every process).
        weight: this shard's share of the meta-batch's tasks, ``n_r / n`` (1.0 in one process).
        step: the step being taken, for error messages.
        extra: numbers to sum over processes along with the gradients (in the widest dtype).

    Returns:
        The sums of ``extra`` (empty without it).
    """
    extra = list(extra or [])
    out: list[float] = []
    buckets = _buckets(params)
    if not buckets:  # a learner without trainable parameters still sums its numbers
        buckets = {(ctx.comm_device, torch.float64): []}
    for i, ((device, dtype), ps) in enumerate(buckets.items()):
        parts = [p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel(), dtype=dtype, device=device) for p in ps]
        flat = torch.cat(parts) if parts else torch.zeros(0, dtype=dtype, device=device)
        if weight != 1.0:
            flat.mul_(weight)
        has = torch.tensor([p.grad is not None for p in ps], dtype=dtype, device=device)
        tail = torch.tensor(extra if i == 0 else [], dtype=dtype, device=device)
        flat = torch.cat([flat, has, tail]).to(ctx.comm_device)
        with collective(ctx, f"the gradient all-reduce at step {step}"):
            dist.all_reduce(flat)
        flat = flat.to(device)
        n = flat.numel() - len(ps) - tail.numel()
        if i == 0:
            out = flat[n + len(ps) :].double().cpu().tolist()
        reached = flat[n : n + len(ps)] > 0
        offset = 0
        for p, got in zip(ps, reached.tolist()):
            g = flat[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
            p.grad = g.clone() if got else None
    return out


def _rng_states(ctx: DistContext) -> list[torch.Tensor]:
    states = [torch.get_rng_state()]
    if ctx.device.type == "cuda":
        states.append(torch.cuda.get_rng_state(ctx.device))
    return states


def broadcast_rng(ctx: DistContext, what: str) -> None:
    """Give every process rank 0's global RNG state (CPU, and the GPU's on CUDA)."""
    cpu = torch.get_rng_state().to(ctx.comm_device)
    with collective(ctx, what):
        dist.broadcast(cpu, src=0)
    torch.set_rng_state(cpu.cpu())
    if ctx.device.type == "cuda":
        gpu = torch.cuda.get_rng_state(ctx.device).to(ctx.comm_device)
        with collective(ctx, what):
            dist.broadcast(gpu, src=0)
        torch.cuda.set_rng_state(gpu.cpu(), ctx.device)


def broadcast_object(ctx: DistContext, obj: T, what: str) -> T:
    """Rank 0's ``obj`` on every process (pickled by torch; only between our own processes)."""
    box = [obj]
    with collective(ctx, what):
        dist.broadcast_object_list(box, src=0, device=ctx.comm_device if ctx.backend == "nccl" else None)
    return box[0]


def gather_objects(ctx: DistContext, obj: Any, what: str) -> list[Any] | None:
    """Every process's ``obj``, in rank order, on rank 0; ``None`` on the others."""
    out: list[Any] | None = [None] * ctx.world_size if ctx.is_main else None
    with collective(ctx, what):
        dist.gather_object(obj, out, dst=0)
    return out


def mark_shared(error: BaseException, ctx: DistContext | None) -> BaseException:
    """Mark an error that every process raises alike (a NaN loss after the all-reduce, a refused
    meta-batch) so that only rank 0 reports it; returns ``error``."""
    if ctx is not None and not ctx.is_main:
        setattr(error, FROM_MAIN, True)
    return error


def run_on_main(ctx: DistContext, fn: Callable[[], T], what: str) -> T:
    """Run ``fn`` on rank 0 only and give its result, or its exception, to every process.

    Rank 0 does file-system work (checks, writes, reads a checkpoint) while the others wait;
    an error there is raised on every process (so none waits forever), and marked so that only
    rank 0 reports it.
    """
    result: Any = None
    error: BaseException | None = None
    if ctx.is_main:
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - re-raised below, on every rank
            error = e
    payload = (result, None) if error is None else (None, _portable(error))
    result, err = broadcast_object(ctx, payload, what)
    if error is not None:
        raise error
    if err is not None:
        setattr(err, FROM_MAIN, True)
        raise err
    return result


def _portable(error: BaseException) -> BaseException:
    """An exception that survives pickling (its own class when it does)."""
    import pickle

    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001 - any unpicklable exception becomes a plain message
        return DistributedError(f"rank 0: {type(error).__name__}: {error}")
