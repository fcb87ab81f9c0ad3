"""Meta-train MAML on sinusoids, adapt to a new task from 5 points, plot the predictive.

    .venv/bin/python examples/maml_sinusoid.py [--steps 3000] [--out maml_sinusoid.png] [--smoke]

Shows the library's three verbs: ``MetaTrainer.fit`` (learn theta), ``adapt`` (condition on a
task's support set; the learner is not modified) and ``predict`` (a posterior predictive with a
mean, a variance and central intervals), then scores the predictive with calibration metrics.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from matplotlib.figure import Figure

from bayesmeta import MAML, MLP, MetaTrainer, Sinusoid, TaskBatch, evaluate, fixed_episodes
from bayesmeta.report.figures import plot_regression_task


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--out", type=Path, default=Path("maml_sinusoid.png"))
    ap.add_argument("--smoke", action="store_true", help="a few steps only (CI)")
    args = ap.parse_args(argv)
    steps = 5 if args.smoke else args.steps

    torch.manual_seed(0)
    learner = MAML(MLP(1, 1, hidden=(40, 40)), inner_lr=0.01, inner_steps=1, test_inner_steps=10,
                   task_kind="regression")
    MetaTrainer(learner, Sinusoid(k_shot=10, n_query=10), steps=steps, meta_batch_size=25,
                progress=not args.smoke).fit()

    episodes = fixed_episodes(Sinusoid(k_shot=5, n_query=50), n_episodes=2 if args.smoke else 20,
                              seed=1234, tasks_per_batch=10)
    print(evaluate(learner, episodes, method="maml 5-shot", progress=False).table())

    # One new task: adapt on 5 points, predict on a grid.
    task, params = Sinusoid(k_shot=5, n_query=1).sample_with_params(1, generator=torch.Generator().manual_seed(7))
    grid = torch.linspace(-5, 5, 200).reshape(1, -1, 1)
    with torch.no_grad():
        pred = learner.predict(learner.adapt(task.support), grid)
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    plot_regression_task(ax, grid, pred, truth=params(grid), support=(task.support_x, task.support_y),
                         label="MAML predictive mean")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"plot written to {args.out}")
    assert isinstance(task, TaskBatch)


if __name__ == "__main__":
    main()
