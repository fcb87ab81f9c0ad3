"""The process group of a multi-process run: who this process is, where it computes, how it talks.

``torchrun`` (or any launcher that sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``
and ``MASTER_PORT``) starts one process per rank; :func:`init_distributed` joins them into one
``torch.distributed`` process group and returns a :class:`DistContext` that the trainer and the
evaluator take as an explicit argument (no module-level state of our own; the process group is
torch's). The backend follows the device: ``nccl`` for CUDA (one GPU per process,
``cuda:LOCAL_RANK``), ``gloo`` for the CPU.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

from bayesmeta.devices import check_device_name
from bayesmeta.exceptions import ConfigError, DistributedError

__all__ = ["DistContext", "launched", "init_distributed", "shutdown", "BACKENDS"]

#: Backends a run may ask for; ``None`` picks by device (nccl on CUDA, gloo on the CPU).
BACKENDS = ("gloo", "nccl")
#: Environment variables every launcher sets (torchrun, torch.distributed.launch, SLURM wrappers).
_LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistContext:
    """This process's place in a multi-process run.

    Attributes:
        rank: global rank, ``0 <= rank < world_size``; rank 0 alone writes files.
        world_size: number of processes.
        local_rank: rank on this machine (picks the GPU: ``cuda:local_rank``).
        backend: ``"gloo"`` or ``"nccl"``.
        device: where this process's learner lives (``cpu`` or ``cuda:local_rank``).
        owns_group: True when :func:`init_distributed` created the process group (and
            :func:`shutdown` should destroy it).
    """

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device
    owns_group: bool = True

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only process that writes checkpoints, logs and progress bars."""
        return self.rank == 0

    @property
    def comm_device(self) -> torch.device:
        """Where tensors must be for a collective: the GPU for nccl, the CPU for gloo."""
        return self.device if self.backend == "nccl" else torch.device("cpu")

    def describe(self) -> str:
        """``"rank 1/2 (gloo, cpu)"``: for error messages."""
        return f"rank {self.rank}/{self.world_size} ({self.backend}, {self.device})"


def launched(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process was started by a distributed launcher (``torchrun``).

    Args:
        environ: the environment to look at (default ``os.environ``).
    """
    env = os.environ if environ is None else environ
    return all(k in env for k in _LAUNCH_VARS)


def _env_int(env: Mapping[str, str], key: str) -> int:
    try:
        return int(env[key])
    except (KeyError, ValueError):
        raise ConfigError(f"{key}: expected an integer environment variable set by torchrun, got {env.get(key)!r}") from None


def _process_device(device: str | torch.device | None, local_rank: int) -> torch.device:
    """``cpu``, or ``cuda:local_rank`` for any CUDA request (one GPU per process)."""
    text = "cpu" if device is None else check_device_name(str(device), "training.device")
    kind = torch.device(text).type
    if kind == "cpu":
        return torch.device("cpu")
    if kind != "cuda":
        raise ConfigError(f"training.device: multi-process runs use 'cpu' (gloo) or 'cuda' (nccl), got {text!r}")
    if not torch.cuda.is_available():
        raise ConfigError(f"training.device: {text!r} asked for, but this machine has no CUDA device (use --device cpu)")
    n_gpus = torch.cuda.device_count()
    if local_rank >= n_gpus:
        raise ConfigError(
            f"LOCAL_RANK: process {local_rank} on this machine needs cuda:{local_rank}, but the machine has "
            f"{n_gpus} GPU(s); start at most {n_gpus} processes per node (--nproc_per_node={n_gpus})"
        )
    # an explicit cuda:N (a config written for one process) also becomes this process's own GPU
    return torch.device("cuda", local_rank)


def init_distributed(
    device: str | torch.device | None = None,
    *,
    backend: str | None = None,
    timeout_s: float = 1800.0,
    environ: Mapping[str, str] | None = None,
) -> DistContext:
    """Join (or reuse) the ``torch.distributed`` process group described by the environment.

    Args:
        device: the device asked for (``training.device`` or ``--device``); any CUDA request
            becomes ``cuda:LOCAL_RANK`` (one GPU per process), ``None`` means the CPU.
        backend: ``"gloo"`` or ``"nccl"``; default nccl on CUDA, gloo on the CPU.
        timeout_s: how long a collective waits for a silent peer before failing (a peer that
            dies is noticed at once: its connections close).
        environ: the environment (default ``os.environ``): ``RANK``, ``WORLD_SIZE``,
            ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``.

    Returns:
        The :class:`DistContext` of this process.

    Raises:
        ConfigError: the launcher's variables are missing or malformed, a backend this build
            lacks, nccl without CUDA, or more processes per node than GPUs.
        DistributedError: the rendezvous failed (wrong address, a peer that never came).
    """
    env = os.environ if environ is None else environ
    if not dist.is_available():
        raise ConfigError("torch.distributed: this torch build has no distributed support")
    if dist.is_initialized():  # a caller (a test, a notebook) set the group up already
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(env.get("LOCAL_RANK", rank))
        dev = _process_device(device, local)
        be = str(dist.get_backend()).lower()
        if be not in BACKENDS:
            raise ConfigError(f"backend: the existing process group uses {be!r}; expected one of {', '.join(BACKENDS)}")
        return DistContext(rank, world, local, be, dev, owns_group=False)
    missing = [k for k in _LAUNCH_VARS if k not in env]
    if missing:
        raise ConfigError(
            f"environment: {', '.join(missing)} not set; start multi-process runs with "
            f"torchrun --standalone --nproc_per_node=N -m bayesmeta ..."
        )
    rank, world, local = _env_int(env, "RANK"), _env_int(env, "WORLD_SIZE"), _env_int(env, "LOCAL_RANK")
    if not (world >= 1 and 0 <= rank < world and local >= 0):
        raise ConfigError(f"RANK/WORLD_SIZE: expected 0 <= RANK < WORLD_SIZE, got RANK={rank}, WORLD_SIZE={world}")
    dev = _process_device(device, local)
    be = backend if backend is not None else ("nccl" if dev.type == "cuda" else "gloo")
    if be not in BACKENDS:
        raise ConfigError(f"backend: expected one of {', '.join(BACKENDS)}, got {be!r}")
    if be == "nccl" and (dev.type != "cuda" or not dist.is_nccl_available()):
        raise ConfigError(f"backend: nccl needs CUDA and a torch build with NCCL; this process computes on {dev} (use gloo)")
    if be == "gloo" and not dist.is_gloo_available():
        raise ConfigError("backend: this torch build has no gloo backend")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)  # object collectives and nccl use the current device
    timeout = datetime.timedelta(seconds=timeout_s)
    try:
        dist.init_process_group(
            be,
            rank=rank,
            world_size=world,
            timeout=timeout,
            device_id=dev if dev.type == "cuda" else None,
            store=_attempt_store(env, world, timeout),
        )
    except (RuntimeError, ValueError, TimeoutError) as e:
        raise DistributedError(
            f"rendezvous: rank {rank}/{world} could not join the process group at "
            f"{env['MASTER_ADDR']}:{env['MASTER_PORT']} ({' '.join(str(e).split())[:300]})"
        ) from None
    return DistContext(rank, world, local, be, dev, owns_group=True)


def _attempt_store(env: Mapping[str, str], world: int, timeout: datetime.timedelta) -> dist.Store | None:
    """Under torchrun's agent store, this attempt's own key space; else None (torch's default).

    Why: with ``--max-restarts`` the restarted workers meet in the same agent store as the
    attempt that died, and gloo's full-mesh connect could read a dead peer's listening address
    left there by the previous attempt ("Connection refused" at rendezvous; seen in about half
    of the restart tests here). A prefix with ``TORCHELASTIC_RESTART_COUNT`` keeps each attempt's
    keys apart.
    """
    if env.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    store = dist.TCPStore(env["MASTER_ADDR"], int(env["MASTER_PORT"]), world, is_master=False, timeout=timeout)
    return dist.PrefixStore(f"bayesmeta/attempt_{env.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def shutdown(ctx: DistContext | None, *, wait: bool = True) -> None:
    """Destroy the process group if :func:`init_distributed` created it.

    Args:
        ctx: this process (``None``: nothing to do).
        wait: pass a barrier first, so that no process leaves while another still talks to it;
            ``False`` after an error (the peers may be gone).
    """
    if ctx is None or not ctx.owns_group or not dist.is_initialized():
        return
    if wait:
        try:
            dist.barrier()
        except RuntimeError:
            pass  # a peer is already gone: nothing to wait for
    dist.destroy_process_group()
