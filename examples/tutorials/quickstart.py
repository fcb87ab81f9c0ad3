"""Quickstart: meta-train MAML on sinusoids, evaluate it, adapt to one task and plot its predictive.

    .venv/bin/python examples/tutorials/quickstart.py [--out-dir docs/assets/tutorials] [--smoke]

The code between the snippet markers is README's example and the site's quickstart page (a test
checks that they stay the same); ``--smoke`` shrinks training and evaluation to seconds.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from matplotlib.figure import Figure

from bayesmeta.report.figures import plot_regression_task

FIGURES = Path(__file__).resolve().parents[2] / "docs" / "assets" / "tutorials"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, default=None,
                    help="where the figures go (default: docs/assets/tutorials; with --smoke a temporary folder)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, seconds (CI)")
    args = ap.parse_args(argv)
    args.out_dir = args.out_dir or (Path(tempfile.mkdtemp(prefix="bayesmeta-smoke-")) if args.smoke else FIGURES)
    steps, n_episodes = (5, 2) if args.smoke else (2000, 100)
    torch.manual_seed(0)

    # --8<-- [start:example]
    from bayesmeta import MAML, MLP, MetaTrainer, Sinusoid, evaluate, fixed_episodes

    learner = MAML(MLP(1, 1, hidden=(40, 40)), inner_lr=0.01, inner_steps=1, task_kind="regression")
    MetaTrainer(learner, Sinusoid(k_shot=10, n_query=10), steps=steps, meta_batch_size=25).fit()

    episodes = fixed_episodes(Sinusoid(k_shot=10, n_query=10), n_episodes=n_episodes, seed=1234, tasks_per_batch=10)
    result = evaluate(learner, episodes)          # per-task metrics + 95% CIs over tasks
    print(result.table())

    batch = episodes[0]
    posterior = learner.adapt(batch.support)      # pure: the learner is not modified
    predictive = learner.predict(posterior, batch.query_x)
    lo, hi = predictive.interval(0.9)             # mean, variance, lo, hi: [T, Q, Dy] each
    # --8<-- [end:example]
    assert predictive.mean.shape == lo.shape == hi.shape == batch.query_y.shape

    # --8<-- [start:plot]
    task, truth = Sinusoid(k_shot=10, n_query=1).sample_with_params(1, generator=torch.Generator().manual_seed(7))
    grid = torch.linspace(-5, 5, 200).reshape(1, -1, 1)            # [T=1, Q=200, 1]
    with torch.no_grad():
        pred = learner.predict(learner.adapt(task.support), grid)
    # --8<-- [end:plot]
    fig = Figure(figsize=(6, 3.2), layout="constrained")
    ax = fig.add_subplot()
    plot_regression_task(ax, grid, pred, truth=truth(grid), support=(task.support_x, task.support_y), label="MAML predictive mean")
    ax.set_title(f"MAML after {steps} meta-steps")
    ax.legend(fontsize=7)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out_dir / "quickstart_predictive.png", dpi=90)


if __name__ == "__main__":
    main()
