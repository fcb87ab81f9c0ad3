"""The CLI's allocator setting (bayesmeta._memory): applied on glibc, harmless elsewhere."""

from __future__ import annotations

import subprocess
import sys


def test_fix_mmap_threshold_applies_on_glibc_and_is_a_bool() -> None:
    # run in a child: the setting is process-wide and must not leak into the test process
    code = "from bayesmeta._memory import fix_mmap_threshold as f; print(f(), f(1 << 20))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == out[1]
    assert out[0] in ("True", "False")
    if sys.platform.startswith("linux"):
        import ctypes.util

        libc = ctypes.util.find_library("c") or ""
        if "libc.so" in libc:  # glibc: mallopt exists and accepts the threshold
            assert out[0] == "True"
