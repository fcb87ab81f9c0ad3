"""Safe files: atomic writes and loads that never unpickle arbitrary objects.

Checkpoints and prediction files are written to a temporary file in the same folder, flushed to
disk, then renamed over the target (``os.replace`` is atomic on POSIX), so a run killed mid-write
leaves the previous file intact. Loading uses ``torch.load(weights_only=True)``: only tensors and
plain containers are accepted; anything else is refused, never executed.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from bayesmeta.exceptions import CheckpointError

__all__ = ["atomic_torch_save", "atomic_write_text", "safe_torch_load"]


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj, path)`` through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(text: str, path: str | Path) -> None:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _refused_object(message: str) -> str:
    """What torch's weights-only unpickler refused, without its advice to retry with
    ``weights_only=False`` (which would execute the file's code)."""
    m = re.search(r"GLOBAL ([\w.]+)", message)
    if m:
        return f"global {m.group(1)}"
    m = re.search(r"WeightsUnpickler error: ([^\n]*)", message)
    if m:
        return m.group(1).split(". ")[0].strip()
    return "not a plain tensor file"


def safe_torch_load(path: str | Path) -> Any:
    """Load a file written by :func:`atomic_torch_save` with ``weights_only=True``.

    Raises:
        CheckpointError: the file is missing, truncated/corrupt, or holds objects other than
            tensors and plain containers (those are refused, never unpickled).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"path: expected an existing checkpoint file, got {str(path)!r} (not found)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refused to load: it holds objects other than tensors and plain containers "
            f"({_refused_object(str(e))}); bayesmeta never unpickles arbitrary objects, so a file "
            f"that needs them is not a bayesmeta file"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot be read, it is truncated or corrupt ({type(e).__name__}: {e})") from None
