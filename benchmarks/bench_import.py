"""Import and test-collection cost (issue 14, item 3), interleaved at one thread.

- ``import_overhead_s``: median over rounds of ``t(import torch; import bayesmeta) - t(import torch)``,
  each in a fresh interpreter (``python -X importtime`` is not used: it inflates times); rounds
  alternate the two commands. Target: <= 0.1 s.
- ``optional_stacks_loaded``: which of GPyTorch/Pyro/ArviZ/matplotlib/scipy/sklearn ``import bayesmeta``
  loads (target: none).
- ``collection``: ``pytest --collect-only -q`` wall time and pytest's own "collected in" time,
  with bytecode caching as configured by the environment (``PYTHONDONTWRITEBYTECODE`` recorded:
  when it is set, pytest re-compiles and re-rewrites every test module on every run).

    .venv/bin/python benchmarks/bench_import.py [--repeats 7] [--no-collect]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _timing import machine

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("gpytorch", "pyro", "arviz", "matplotlib", "scipy", "sklearn", "pandas", "linear_operator")


def _run(code: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--no-collect", action="store_true")
    args = ap.parse_args()
    torch_only, both = [], []
    _run("import torch")  # warm the file cache
    for _ in range(args.repeats):
        torch_only.append(_run("import torch"))
        both.append(_run("import torch, bayesmeta"))
    diffs = [b - a for a, b in zip(torch_only, both)]
    probe = subprocess.run(
        [sys.executable, "-c", f"import sys, bayesmeta; print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout.strip()
    result: dict[str, object] = {
        "benchmark": "import_and_collection",
        "machine": machine(),
        "import_torch_s": round(statistics.median(torch_only), 3),
        "import_overhead_s": round(statistics.median(diffs), 3),
        "import_overhead_s_all_rounds": [round(d, 3) for d in diffs],
        "optional_stacks_loaded": probe,
    }
    if not args.no_collect:
        walls, internal = [], []
        for _ in range(3):
            t0 = time.perf_counter()
            out = subprocess.run(
                [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
                capture_output=True, text=True, cwd=ROOT,
            ).stdout
            walls.append(time.perf_counter() - t0)
            m = re.search(r"collected in ([0-9.]+)s", out)
            internal.append(float(m.group(1)) if m else float("nan"))
        result["collection"] = {
            "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE"),
            "wall_s": [round(w, 2) for w in walls],
            "pytest_collected_in_s": internal,
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
