"""``bayesmeta demo``: the default job, end to end on bundled data.

Meta-trains MAML on sinusoid regression (as in MAML: 10-shot, 1 inner step, 40-40 MLP)
and ProtoNets on Omniglot 5-way 1-shot on a small budget, evaluates both on fixed test episodes
and prints one results table (accuracy or MSE, NLL, calibration) with 95% CIs over tasks.
The budget is sized to finish in a few minutes on 2 CPU cores; ``smoke=True`` shrinks it to
seconds for CI.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from bayesmeta.evaluation import format_table
from bayesmeta.runs import evaluate_run, train_run

__all__ = ["DEMO_CONFIGS", "run_demo"]

DEMO_CONFIGS: dict[str, dict[str, Any]] = {
    "maml_sinusoid": {
        "method": {"name": "maml", "inner_lr": 0.01, "inner_steps": 1},
        "model": {"name": "mlp", "hidden": [40, 40]},
        "tasks": {"name": "sinusoid", "k_shot": 10, "n_query": 10},
        "training": {"steps": 3000, "meta_batch_size": 25, "lr": 1e-3, "seed": 0,
                     "val_episodes": 100, "val_every": 500, "checkpoint_every": 500},
        "evaluation": {"n_episodes": 600, "seed": 1234, "tasks_per_batch": 50},
    },
    "protonet_omniglot_5w1s": {
        "method": {"name": "protonet"},
        "model": {"name": "conv4", "hidden": 64, "norm": "task"},
        # 5 queries per class in training (cheaper steps), the usual 15 at test
        "tasks": {"name": "omniglot", "n_way": 5, "k_shot": 1, "n_query": 5},
        "training": {"steps": 600, "meta_batch_size": 4, "lr": 1e-3, "seed": 0,
                     "val_episodes": 50, "val_every": 200, "checkpoint_every": 200},
        "evaluation": {"n_episodes": 600, "seed": 1234, "tasks_per_batch": 20, "tasks": {"n_query": 15}},
    },
}


def _smoke(cfg: dict[str, Any]) -> dict[str, Any]:
    cfg = copy.deepcopy(cfg)
    cfg["training"].update(steps=5, val_episodes=2, val_every=5, checkpoint_every=5)
    cfg["evaluation"].update(n_episodes=2)
    return cfg


def run_demo(out: str | Path = "runs/demo", *, smoke: bool = False, progress: bool = True) -> str:
    """Train and evaluate the demo configs under ``out``; print and return the results table.

    Re-running resumes finished runs (their checkpoints are complete) and evaluates again.
    """
    results = []
    for name, cfg in DEMO_CONFIGS.items():
        run_dir = Path(out) / (name + ("_smoke" if smoke else ""))
        print(f"== {name}: training into {run_dir}", flush=True)
        train_run(_smoke(cfg) if smoke else cfg, run_dir, progress=progress)
        results.append(evaluate_run(run_dir, progress=progress))
    table = format_table(results)
    print()
    print(table)
    return table
