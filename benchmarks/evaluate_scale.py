"""Peak memory and wall time of ``bayesmeta evaluate`` on a trained run, in a fresh process.

Usage::

    python benchmarks/evaluate_scale.py --code ROOT --run-dir RUN [--episodes N] [--max-tasks-per-call N] [--label NAME]

Runs ``bayesmeta evaluate RUN --no-progress`` with ``ROOT`` first on ``PYTHONPATH`` (so an older
checkout can be measured against this one), torch at one thread, and prints one JSON object:
wall seconds of the whole command (imports and data loading included) and the peak resident
memory of that process (``ru_maxrss`` of the child, from ``os.wait4``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def measure(code: str, run_dir: str, episodes: int | None, extra: list[str]) -> dict[str, float]:
    """One evaluation in a fresh process: ``{"wall_s", "peak_rss_mb"}``."""
    argv = ["evaluate", run_dir, "--no-progress", *extra] + ([] if episodes is None else ["--episodes", str(episodes)])
    script = (
        "import sys, torch; torch.set_num_threads(1); from bayesmeta.cli import main; "
        f"sys.exit(main({argv!r}))"
    )
    env = {**os.environ, "PYTHONPATH": code, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"evaluate failed: {err}")
    return {"wall_s": round(wall, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--code", required=True, help="repository root to import bayesmeta from")
    p.add_argument("--run-dir", required=True, help="a trained run directory")
    p.add_argument("--episodes", type=int, default=None, help="override evaluation.n_episodes")
    p.add_argument("--label", default="", help="name of this measurement in the JSON")
    p.add_argument("--max-tasks-per-call", type=int, default=None, help="pass --max-tasks-per-call N (checkouts that have it)")
    a = p.parse_args()
    extra = [] if a.max_tasks_per_call is None else ["--max-tasks-per-call", str(a.max_tasks_per_call)]
    res = measure(a.code, a.run_dir, a.episodes, extra)
    print(json.dumps({"label": a.label, "run_dir": a.run_dir, "episodes": a.episodes, "max_tasks_per_call": a.max_tasks_per_call, **res}))


if __name__ == "__main__":
    main()
