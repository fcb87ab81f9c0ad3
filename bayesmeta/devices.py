"""Devices and dtypes: parse what a user asked for, refuse what this machine cannot do, and move
data to a learner at one boundary.

A config says ``training.device`` (``cpu``, ``cuda``, ``cuda:N``, ``mps``) and ``training.dtype``
(``float32``, ``float64``). The learner is moved once, after it is built; every task batch is
moved to the learner's device and floating dtype by :func:`batch_to_learner` where it enters the
trainer or the evaluator, so the data never has to know where the model lives. Asking for a
device this build or machine lacks is a :class:`~bayesmeta.exceptions.ConfigError` that says what
is available, never torch's ``AssertionError: Torch not compiled with CUDA enabled``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import torch
from torch import nn

from bayesmeta.exceptions import ConfigError

if TYPE_CHECKING:  # tasks.batch imports this module for TaskBatch.to
    from bayesmeta.tasks.batch import TaskBatch

__all__ = ["DTYPES", "check_device_name", "resolve_device", "resolve_dtype", "learner_device_dtype", "batch_to_learner"]

#: Floating dtypes a run may use, by config name.
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}
_DEVICE_RE = re.compile(r"^(cpu|mps|cuda)(:\d+)?$")


def _available() -> str:
    have = ["cpu"]
    if torch.cuda.is_available():
        have += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        have.append("mps")
    return ", ".join(have)


def check_device_name(device: object, name: str = "device") -> str:
    """Check the spelling of a device (``cpu``, ``cuda``, ``cuda:N``, ``mps``) without asking
    whether this machine has it (a config written on a GPU machine still loads on a laptop).

    Raises:
        ConfigError: anything else.
    """
    if not isinstance(device, str | torch.device) or not _DEVICE_RE.match(str(device)):
        raise ConfigError(f"{name}: expected 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}")
    return str(device)


def resolve_device(device: str | torch.device | None, name: str = "device") -> torch.device:
    """Parse and check a device.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``, a :class:`torch.device`, or
            ``None`` (CPU).
        name: the option's name for error messages (``training.device``, ``--device``...).

    Returns:
        The :class:`torch.device`.

    Raises:
        ConfigError: an unknown device string, or one this build/machine does not have (the
            message lists the available ones).
    """
    if device is None:
        return torch.device("cpu")
    text = check_device_name(device, name)
    dev = torch.device(text)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"{name}: {text!r} is not available (this torch build or machine has no CUDA device); "
                f"available: {_available()} (e.g. --device cpu)"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"{name}: {text!r} is not available ({torch.cuda.device_count()} CUDA device(s)); "
                f"available: {_available()}"
            )
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError(f"{name}: 'mps' is not available on this machine; available: {_available()}")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, name: str = "dtype") -> torch.dtype:
    """``"float32"``/``"float64"`` (or the torch dtype) -> :class:`torch.dtype`; ``None``: float32.

    Raises:
        ConfigError: any other value.
    """
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise ConfigError(f"{name}: expected one of {', '.join(DTYPES)}, got {dtype!r}")


def learner_device_dtype(learner: nn.Module) -> tuple[torch.device, torch.dtype | None]:
    """Device and floating dtype of a module's first floating parameter or buffer.

    A module without floating tensors is taken to live on the CPU with no dtype preference.

    Raises:
        ConfigError: the module's floating tensors are spread over several devices or dtypes
            (a partial ``.to()``), which no batch can match.
    """
    tensors = [t for t in (*learner.parameters(), *learner.buffers()) if t.is_floating_point()]
    if not tensors:
        return torch.device("cpu"), None
    devices = {t.device for t in tensors}
    dtypes = {t.dtype for t in tensors}
    if len(devices) > 1 or len(dtypes) > 1:
        raise ConfigError(
            f"learner: expected all parameters on one device with one dtype (call learner.to(device, dtype)), "
            f"got devices {sorted(map(str, devices))} and dtypes {sorted(map(str, dtypes))}"
        )
    return tensors[0].device, tensors[0].dtype


def batch_to_learner(batch: TaskBatch, learner: nn.Module) -> TaskBatch:
    """Move a :class:`~bayesmeta.tasks.TaskBatch` to the learner's device and floating dtype.

    The one place where data meets the model: integer labels and masks keep their dtype; inputs
    and regression targets take the learner's dtype. A batch already in place is returned as is.
    """
    device, dtype = learner_device_dtype(learner)
    x = batch.support_x
    if x.device == device and (dtype is None or not x.is_floating_point() or x.dtype == dtype):
        y = batch.support_y
        if not y.is_floating_point() or dtype is None or y.dtype == dtype:
            return batch
    return batch.to(device, dtype)
