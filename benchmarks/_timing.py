"""Interleaved timing for the speed benchmarks (DESIGN.md section 9).

Contenders run in turn (A, B, C, A, B, C, ...) so that a change of machine load hits all of them;
the reported ratio is the median over rounds of ``time(contender) / time(baseline)`` within one
round, not a ratio of medians of runs made one after the other.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable

import torch


def interleaved(
    contenders: dict[str, Callable[[], object]], baseline: str, repeats: int, warmup: int = 3
) -> dict[str, dict[str, float]]:
    """Median time (ms) of each contender and its median per-round ratio to ``baseline``.

    Args:
        contenders: name -> zero-argument callable (one timed call each per round).
        baseline: the name whose time is the denominator of every ratio.
        repeats: timed rounds.
        warmup: untimed rounds first.

    Returns:
        ``{name: {"median_ms", "ratio", "ratio_q25", "ratio_q75"}}``.
    """
    # CUDA kernels run asynchronously: wait for them, or the time is the launch time only
    sync = torch.cuda.synchronize if torch.cuda.is_available() and torch.cuda.is_initialized() else (lambda: None)
    for _ in range(warmup):
        for fn in contenders.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    out: dict[str, dict[str, float]] = {}
    for name, ts in times.items():
        ratios = sorted(a / b for a, b in zip(ts, times[baseline]))
        q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
        out[name] = {
            "median_ms": round(1e3 * statistics.median(ts), 4),
            "ratio": round(statistics.median(ratios), 3),
            "ratio_q25": round(q[0], 3),
            "ratio_q75": round(q[2], 3),
        }
    return out


def machine() -> dict[str, object]:
    """What the JSON records about the machine and the thread setting."""
    import os

    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
