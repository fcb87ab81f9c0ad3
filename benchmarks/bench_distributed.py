"""Meta-training steps per second with 1 and 2 processes (torchrun, gloo, one thread each).

For each config (MAML on sinusoids, ProtoNets on Omniglot 5-way 1-shot, the example configs
without validation), the script launches ``torchrun --standalone --nproc_per_node=N`` on itself
for N = 1 and N = 2 in turn (1, 2, 1, 2, ...), and, as a third point of comparison, one process
with 2 intra-op threads. Each launch trains ``--warmup`` + timed steps with the same
``train_run`` the CLI uses; the steps after the first ``--warmup`` (first-call overheads) are
timed from rank 0's step callback, so start-up, dataset loading and the final checkpoint are
not counted. Steps/s is the median over ``--repeats`` launches; ``speedup_2proc`` is the median 2-process rate over the median
1-process rate of the same run.

    flock /tmp/bm-a.lock flock /tmp/bm-b.lock .venv/bin/python benchmarks/bench_distributed.py [--config maml_sinusoid]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {
    "maml_sinusoid": ("examples/configs/maml_sinusoid.yaml", 400),
    "protonet_omniglot_5w1s": ("examples/configs/protonet_omniglot_5w1s.yaml", 30),
}


def worker(config: str, run_dir: str, warmup: int, steps: int, threads: int) -> None:
    """Under torchrun: train ``warmup`` steps, then time ``steps`` more; rank 0 prints JSON."""
    torch.set_num_threads(threads)
    from bayesmeta.config import load_config
    from bayesmeta.distributed import init_distributed, shutdown
    from bayesmeta.runs import train_run

    cfg = load_config(REPO / config)
    cfg["training"].update(val_episodes=0, checkpoint_every=10**6, log_every=10**6)
    ctx = init_distributed("cpu")
    stamps: dict[int, float] = {}
    train_run(cfg, run_dir, steps=warmup + steps, progress=False, distributed=ctx,
              callback=lambda step, out: stamps.__setitem__(step, time.perf_counter()))
    wall = stamps[warmup + steps] - stamps[warmup]  # steps warmup+1 .. warmup+steps
    if ctx.is_main:
        print("RESULT " + json.dumps({"steps_per_s": steps / wall, "wall_s": wall}), flush=True)
    shutdown(ctx)


def launch(config: str, nproc: int, threads: int, warmup: int, steps: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            __file__, "--worker", config, str(Path(tmp) / "run"), str(warmup), str(steps), str(threads),
        ]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, cwd=REPO).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("RESULT "))
    return float(json.loads(line[len("RESULT "):])["steps_per_s"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps-scale", type=float, default=1.0, help="multiply each config's timed steps")
    ap.add_argument("--config", choices=sorted(CONFIGS), action="append", default=None,
                    help="only this config (repeatable; default: all)")
    ap.add_argument("--worker", nargs=5, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.warmup = max(1, args.warmup)
    if args.worker is not None:
        config, run_dir, warmup, steps, threads = args.worker
        worker(config, run_dir, int(warmup), int(steps), int(threads))
        return
    results = {}
    for name, (config, steps) in CONFIGS.items():
        if args.config is not None and name not in args.config:
            continue
        n = max(1, int(steps * args.steps_scale))
        rates: dict[str, list[float]] = {"1proc_1thread": [], "2proc_1thread": [], "1proc_2threads": []}
        for _ in range(args.repeats):  # interleaved: 1, 2, 1x2 threads, 1, 2, ...
            rates["1proc_1thread"].append(launch(config, 1, 1, args.warmup, n))
            rates["2proc_1thread"].append(launch(config, 2, 1, args.warmup, n))
            rates["1proc_2threads"].append(launch(config, 1, 2, args.warmup, n))
        med = {k: statistics.median(v) for k, v in rates.items()}
        results[name] = {
            "config": config,
            "timed_steps": n,
            "steps_per_s_median": {k: round(v, 3) for k, v in med.items()},
            "steps_per_s_all": {k: [round(x, 3) for x in v] for k, v in rates.items()},
            "speedup_2proc": round(med["2proc_1thread"] / med["1proc_1thread"], 3),
            "speedup_2threads": round(med["1proc_2threads"] / med["1proc_1thread"], 3),
        }
    print(json.dumps({
        "benchmark": "distributed_steps_per_s",
        "machine": {"cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version()},
        "repeats": args.repeats,
        "warmup_steps": args.warmup,
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
