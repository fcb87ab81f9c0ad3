"""Process-level memory settings for the command line (private).

Evaluation allocates and frees large activation tensors once per call while small results
accumulate. glibc's malloc raises its mmap threshold dynamically after large frees (up to 32 MB),
so later large tensors come from the heap, interleave with the small long-lived ones and the heap
cannot shrink: peak RSS of ``bayesmeta evaluate`` on 600 Omniglot 20-way episodes grew to
~1 GB this way, against 466 MB with the threshold fixed at 128 KiB (docs/benchmarks.md, issue 10
section). Fixing the threshold (``mallopt(M_MMAP_THRESHOLD)``, what the ``MALLOC_MMAP_THRESHOLD_``
environment variable does) returns every large tensor to the OS when freed.

This changes a process-wide allocator setting, so only the CLI, which owns its process, calls it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["fix_mmap_threshold"]

_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


def fix_mmap_threshold(threshold: int = 128 * 1024) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes; a no-op elsewhere.

    Returns:
        True when the setting was applied (Linux with glibc), False otherwise.
    """
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, int(threshold)))
