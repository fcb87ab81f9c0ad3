"""MAML meta-step speed: bayesmeta's vmapped inner loop against the per-task `higher` loop.

Setup of the issue: sinusoid, 25 tasks, 10-shot (10 support + 10 query), 1 inner step, 40-40 MLP,
second order. Both routes compute the same meta-gradient (checked here, relative error printed)
in the same process; the speed-up is the ratio of median step times, at 1 and at 2 torch threads.

    .venv/bin/python benchmarks/bench_maml_step.py [--repeats 50]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import higher
import torch

from bayesmeta.inference import MAML
from bayesmeta.models import MLP
from bayesmeta.tasks import Sinusoid


def higher_step(model: torch.nn.Module, batch, lr: float, steps: int) -> list[torch.Tensor]:
    """Per-task loop: the way MAML is written without vmap (one `higher` context per task)."""
    params = list(model.parameters())
    inner_opt = torch.optim.SGD(params, lr=lr)
    total = None
    for t in range(batch.n_tasks):
        with higher.innerloop_ctx(model, inner_opt, copy_initial_weights=False) as (fmodel, diffopt):
            for _ in range(steps):
                diffopt.step(((fmodel(batch.support_x[t]) - batch.support_y[t]) ** 2).mean())
            q = ((fmodel(batch.query_x[t]) - batch.query_y[t]) ** 2).mean() / batch.n_tasks
            g = torch.autograd.grad(q, params)
            total = list(g) if total is None else [a + b for a, b in zip(total, g)]
    return total


def ours_step(learner: MAML, batch) -> list[torch.Tensor]:
    loss = learner.meta_loss(batch).loss
    return list(torch.autograd.grad(loss, list(learner.model.parameters())))


def median_time(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--tasks", type=int, default=25)
    ap.add_argument("--inner-steps", type=int, default=1)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = MLP(1, 1, hidden=(40, 40))
    learner = MAML(model, inner_lr=0.01, inner_steps=args.inner_steps, task_kind="regression", noise=1.0)
    batch = Sinusoid(k_shot=10, n_query=10).sample(args.tasks, generator=torch.Generator().manual_seed(1))

    g_ours = ours_step(learner, batch)
    g_ref = higher_step(model, batch, 0.01, args.inner_steps)
    num = sum(float(((a - b) ** 2).sum()) for a, b in zip(g_ours, g_ref)) ** 0.5
    den = sum(float((b**2).sum()) for b in g_ref) ** 0.5
    result: dict[str, object] = {
        "benchmark": "maml_meta_step_vs_higher",
        "setup": {"tasks": args.tasks, "k_shot": 10, "n_query": 10, "inner_steps": args.inner_steps,
                  "mlp": [40, 40], "second_order": True, "repeats": args.repeats},
        "meta_gradient_rel_err_float32": num / den,
        "torch": torch.__version__,
        "machine": {"cpus": torch.get_num_threads(), "platform": platform.platform()},
    }
    for threads in (1, 2):
        torch.set_num_threads(threads)
        t_ours = median_time(lambda: ours_step(learner, batch), args.repeats)
        t_ref = median_time(lambda: higher_step(model, batch, 0.01, args.inner_steps), args.repeats)
        result[f"threads_{threads}"] = {"bayesmeta_ms": 1e3 * t_ours, "higher_ms": 1e3 * t_ref, "speedup": t_ref / t_ours}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
