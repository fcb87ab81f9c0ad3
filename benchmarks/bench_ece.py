"""Benchmark: ECE over 10^6 predictions x 10 classes, bayesmeta vs torchmetrics vs netcal.

Prints one JSON object. Speed is reported as ratios measured in this same process (DESIGN.md
section 8): ``peer_time / bayesmeta_time`` (above 1: bayesmeta is faster). Every library gets the
same float32 probabilities (torchmetrics computes in float32 internally; netcal gets the numpy
view) and 15 equal-width bins; the ECE values are printed too, to show that they agree. Each
timing is the best of ``--repeats`` runs, after one warm-up run, at ``torch.set_num_threads(k)``
for each k in ``--threads``.

    python benchmarks/bench_ece.py [--n 1000000] [--classes 10] [--repeats 5] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import torch

from bayesmeta.metrics import ece


def _best_time(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    value = float(fn())  # warm-up, and the value
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best, value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--bins", type=int, default=15)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()

    g = torch.Generator().manual_seed(0)
    logits = 2.0 * torch.randn(args.n, args.classes, generator=g)
    probs = torch.softmax(logits, -1)  # float32
    targets = torch.multinomial(probs, 1, generator=g).squeeze(-1)
    probs_np, targets_np = probs.numpy(), targets.numpy()

    peers: dict[str, Callable[[], Any]] = {}
    versions: dict[str, str] = {"torch": torch.__version__}
    try:
        from torchmetrics import __version__ as tm_version
        from torchmetrics.functional.classification import multiclass_calibration_error

        versions["torchmetrics"] = tm_version
        peers["torchmetrics"] = lambda: multiclass_calibration_error(
            probs, targets, num_classes=args.classes, n_bins=args.bins, norm="l1"
        )
    except ImportError:
        versions["torchmetrics"] = "not installed"
    try:
        import netcal
        from netcal.metrics import ECE

        versions["netcal"] = netcal.__version__
        peers["netcal"] = lambda: ECE(args.bins).measure(probs_np, targets_np)
    except ImportError:
        versions["netcal"] = "not installed"

    results = []
    for k in args.threads:
        torch.set_num_threads(k)
        ours_t, ours_v = _best_time(lambda: ece(probs, targets, n_bins=args.bins), args.repeats)
        row: dict[str, Any] = {"threads": k, "bayesmeta_s": round(ours_t, 5), "values": {"bayesmeta": ours_v}, "ratio": {}}
        for name, fn in peers.items():
            t, v = _best_time(fn, args.repeats)
            row[f"{name}_s"] = round(t, 5)
            row["values"][name] = v
            row["ratio"][f"{name}/bayesmeta"] = round(t / ours_t, 3)
        results.append(row)

    print(json.dumps({
        "benchmark": "ece",
        "n": args.n,
        "classes": args.classes,
        "bins": args.bins,
        "dtype": "float32",
        "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "versions": versions,
        "results": results,
    }))


if __name__ == "__main__":
    main()
