"""MAML on sinusoid regression: test MSE (and calibration of its Gaussian predictive) after
meta-training, 5-shot and 10-shot, on 600 fixed test tasks.

    .venv/bin/python benchmarks/bench_sinusoid_maml.py [--steps 5000] [--threads 1]

MAML's setup (Finn et al. 2017): 40-40 ReLU MLP, one inner step of 0.01 in training, meta-batch
25, Adam 1e-3; at test 1 and 10 inner steps. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from bayesmeta.config import build_episodes
from bayesmeta.evaluation import evaluate
from bayesmeta.runs import load_learner, train_run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--run-root", default="runs/bench/sinusoid")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out: dict[str, object] = {"benchmark": "maml_sinusoid", "steps": args.steps, "torch": torch.__version__,
                              "threads": args.threads}
    for k in (5, 10):
        cfg = {
            "method": {"name": "maml", "inner_lr": 0.01, "inner_steps": 1},
            "model": {"name": "mlp", "hidden": [40, 40]},
            "tasks": {"name": "sinusoid", "k_shot": k, "n_query": 10},
            "training": {"steps": args.steps, "meta_batch_size": 25, "lr": 1e-3, "seed": 0, "val_episodes": 0,
                         "checkpoint_every": 1000},
            "evaluation": {"n_episodes": 600, "seed": 1234, "tasks_per_batch": 100, "tasks": {"n_query": 100}},
        }
        run = f"{args.run_root}/maml_{k}shot"
        t0 = time.time()
        train_run(cfg, run, progress=False)
        minutes = (time.time() - t0) / 60
        learner, resolved = load_learner(run, "last")
        episodes = build_episodes(resolved, "test")
        for test_steps in (1, 10):
            learner.test_inner_steps = test_steps  # an evaluation-time option of MAML
            res = evaluate(learner, episodes, method=f"maml-{test_steps}", progress=False)
            out[f"{k}shot_{test_steps}step"] = {
                m: res.summary[m].to_dict() for m in ("mse", "nll", "pit_error", "coverage_90") if m in res.summary
            }
        out[f"{k}shot_train_minutes"] = minutes
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
