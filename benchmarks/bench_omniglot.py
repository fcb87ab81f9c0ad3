"""Omniglot few-shot accuracy of ProtoNets and MAML after a wall-clock-budgeted meta-training run.

    .venv/bin/python benchmarks/bench_omniglot.py protonet --minutes 30 --run-dir runs/bench/protonet
    .venv/bin/python benchmarks/bench_omniglot.py maml --minutes 60 --run-dir runs/bench/maml

ProtoNets trains on 20-way 1-shot episodes (5 queries per class; Snell et al. train with more ways
than they test) and is tested 5-way and 20-way 1-shot; MAML trains and tests 5-way 1-shot
(1 inner step of 0.4 in training, 3 at test, second order). Test: 600 fixed episodes
(``evaluation.seed`` 1234, 15 queries per class) from the 423 held-out characters (Vinyals split),
with 95% bootstrap CIs over episodes. The run resumes if ``--run-dir`` already holds a checkpoint.
Prints one JSON object (also written to RUN_DIR/bench.json).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from bayesmeta.runs import evaluate_run, train_run
from bayesmeta.training import load_checkpoint

CONFIGS = {
    "protonet": {
        "method": {"name": "protonet"},
        "model": {"name": "conv4", "hidden": 64},
        "tasks": {"name": "omniglot", "n_way": 20, "k_shot": 1, "n_query": 5},
        "training": {"steps": 100000, "meta_batch_size": 1, "lr": 1e-3, "seed": 0, "val_episodes": 100,
                     "val_every": 500, "checkpoint_every": 250, "log_every": 50},
        "evaluation": {"n_episodes": 600, "seed": 1234, "tasks_per_batch": 10, "tasks": {"n_query": 15}},
    },
    "maml": {
        "method": {"name": "maml", "inner_lr": 0.4, "inner_steps": 1, "test_inner_steps": 3},
        "model": {"name": "conv4", "hidden": 64},
        "tasks": {"name": "omniglot", "n_way": 5, "k_shot": 1, "n_query": 5},
        "training": {"steps": 100000, "meta_batch_size": 8, "lr": 1e-3, "seed": 0, "val_episodes": 100,
                     "val_every": 500, "checkpoint_every": 250, "log_every": 50},
        "evaluation": {"n_episodes": 600, "seed": 1234, "tasks_per_batch": 10, "tasks": {"n_query": 15}},
    },
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("method", choices=sorted(CONFIGS))
    ap.add_argument("--minutes", type=float, required=True, help="meta-training wall-clock budget")
    ap.add_argument("--run-dir", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--episodes", type=int, default=600, help="test episodes (tasks) per way count")
    ap.add_argument("--eval-only", action="store_true", help="evaluate the run's kept checkpoint, no training")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = copy.deepcopy(CONFIGS[args.method])
    cfg["training"]["max_minutes"] = args.minutes
    t0 = time.time()
    if args.eval_only:
        ckpt = load_checkpoint(args.run_dir / "checkpoints" / "last.pt")
        steps, best_val, best_step = ckpt["step"], ckpt["best_val"], ckpt["best_step"]
    else:
        res = train_run(cfg, args.run_dir, progress=False)
        steps, best_val, best_step = res.steps, res.best_val, res.best_step
    train_s = time.time() - t0
    out: dict[str, object] = {
        "benchmark": f"omniglot_{args.method}",
        "train_steps": steps,
        "train_minutes": None if args.eval_only else train_s / 60,
        "best_val": best_val,
        "best_step": best_step,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    ways = (5, 20) if args.method == "protonet" else (5,)
    for n_way in ways:
        r = evaluate_run(args.run_dir, task_overrides={"n_way": n_way}, progress=False, n_episodes=args.episodes,
                         out_dir=args.run_dir / ("eval" if n_way == 5 else f"eval_{n_way}way"))
        out[f"{n_way}way_1shot"] = {k: r.summary[k].to_dict() for k in ("accuracy", "nll", "ece") if k in r.summary}
    (args.run_dir / "bench.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
