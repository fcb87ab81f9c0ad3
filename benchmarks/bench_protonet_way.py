"""ProtoNets' training way at equal CPU: which episodes to meta-train on for 5-way 1-shot tests.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_protonet_way.py --way 20 --meta-batch 1 \\
        --budget 300 --run-dir runs/protonet_way/20

Meta-trains ProtoNets (Conv4-64, TaskNorm-I, Adam 1e-3) on Omniglot ``--way``-way 1-shot
episodes with 5 queries per class, ``--meta-batch`` episodes per step, for ``--budget`` CPU
seconds (``time.process_time`` of this process, validation included), then evaluates the
validation-best checkpoint on the ``omniglot_5w1s`` suite's test episodes (5-way 1-shot, 15
queries per class, evaluation seed 1234; ``--episodes`` of them). One way per call, so that two
calls can share a 2-core machine one per core (a CPU budget is unaffected by the sharing).

Prints one JSON object: the options, steps reached, best validation score (on validation
episodes of the *training* way), and the test metrics with their 95% bootstrap CIs.
"""

from __future__ import annotations

import argparse
import json
import platform

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--way", type=int, required=True, help="ways of the training episodes")
    ap.add_argument("--meta-batch", type=int, default=1, help="episodes per meta-step")
    ap.add_argument("--budget", type=float, default=300.0, help="CPU seconds of meta-training")
    ap.add_argument("--episodes", type=int, default=200, help="5-way 1-shot test tasks")
    ap.add_argument("--run-dir", required=True, help="a new run directory")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from bayesmeta.runs import evaluate_run, train_run

    cfg = {
        "method": {"name": "protonet"},
        "model": {"name": "conv4", "hidden": 64, "norm": "task"},
        "tasks": {"name": "omniglot", "n_way": args.way, "k_shot": 1, "n_query": 5},
        "training": {"steps": 100_000, "meta_batch_size": args.meta_batch, "lr": 1e-3, "seed": 0,
                     "val_episodes": 50, "val_every": 200, "checkpoint_every": 50, "log_every": 10},
        "evaluation": {"n_episodes": args.episodes, "seed": 1234, "tasks_per_batch": 10,
                       "tasks": {"n_way": 5, "n_query": 15}},
    }  # fmt: skip
    trained = train_run(cfg, args.run_dir, progress=False, max_cpu_seconds=args.budget)
    res = evaluate_run(args.run_dir, progress=False, max_tasks_per_call=None)
    print(json.dumps({
        "way": args.way, "meta_batch": args.meta_batch, "budget_s": args.budget, "steps": trained.steps,
        "best_val": trained.best_val, "best_step": trained.best_step, "n_tasks": args.episodes,
        "episode_fingerprint": res.episode_fingerprint,
        "test": {k: {"mean": v.mean, "low": v.low, "high": v.high} for k, v in res.summary.items()
                 if k in ("accuracy", "ece", "nll", "brier")},
        "machine": f"{platform.machine()}, torch {torch.__version__}, 1 thread",
    }))  # fmt: skip


if __name__ == "__main__":
    main()
