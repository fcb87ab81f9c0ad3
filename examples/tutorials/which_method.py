"""Which method when: six learners on the same sinusoid tasks, their predictive bands, a prior.

    .venv/bin/python examples/tutorials/which_method.py [--steps 1500] [--out-dir docs/assets/tutorials] [--smoke]

Meta-trains MAML, BMAML, PLATIPUS, ALPaCA, DKT (spectral kernel) and ANP on 5-shot sinusoid
regression with the same budget of meta-steps, scores each on the same fixed test tasks
(printed as one JSON object), and draws two figures: every method's 90% predictive band on one
new task (``bands_per_method.png``) and functions drawn from PLATIPUS' learned prior over the
network's weights before and after meta-training (``prior_samples.png``). ``--smoke``: a few
steps and tasks, seconds.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from matplotlib.figure import Figure

from bayesmeta import (
    ANP,
    BMAML,
    DKT,
    MAML,
    MLP,
    PLATIPUS,
    ALPaCA,
    MetaLearner,
    MetaTrainer,
    Sinusoid,
    evaluate,
    fixed_episodes,
)
from bayesmeta.report.figures import plot_regression_task

FIGURES = Path(__file__).resolve().parents[2] / "docs" / "assets" / "tutorials"

# --8<-- [start:learners]
# One factory per method; every one adapts to a task's support set and returns a predictive.
LEARNERS: dict[str, tuple[Callable[[], MetaLearner], int]] = {  # name -> (factory, tasks per step)
    "MAML": (lambda: MAML(MLP(1, 1, hidden=(40, 40)), inner_lr=0.01, test_inner_steps=10,
                          task_kind="regression"), 25),
    "BMAML": (lambda: BMAML(MLP(1, 1, hidden=(40, 40)), n_particles=5, task_kind="regression"), 25),
    "PLATIPUS": (lambda: PLATIPUS(MLP(1, 1, hidden=(40, 40)), n_samples=5, task_kind="regression"), 25),
    "ALPaCA": (lambda: ALPaCA(MLP(1, None, hidden=(64, 64, 32)), feature_dim=32), 25),
    "DKT": (lambda: DKT(MLP(1, 1, hidden=(40, 40)), kernel="spectral", task_kind="regression"), 8),
    "ANP": (lambda: ANP(hidden=64, r_dim=64, z_dim=64, n_heads=4, n_samples=16), 16),
}
# --8<-- [end:learners]


def prior_panel(ax, learner: PLATIPUS, x: torch.Tensor, title: str) -> None:  # type: ignore[no-untyped-def]
    """Functions drawn from the learner's prior over the network weights."""
    with torch.no_grad():
        # --8<-- [start:prior]
        f = learner.prior.sample_functions(x, n=20, generator=torch.Generator().manual_seed(0))  # [20, N, 1]
        # --8<-- [end:prior]
    for k in range(f.shape[0]):
        ax.plot(x[:, 0], f[k, :, 0], lw=0.8, alpha=0.6)
    ax.set(title=title, xlabel="x", ylabel="f(x)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1500, help="meta-steps per method")
    ap.add_argument("--out-dir", type=Path, default=None,
                    help="where the figures go (default: docs/assets/tutorials; with --smoke a temporary folder)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, seconds (CI)")
    args = ap.parse_args(argv)
    args.out_dir = args.out_dir or (Path(tempfile.mkdtemp(prefix="bayesmeta-smoke-")) if args.smoke else FIGURES)
    steps, n_test = (3, 4) if args.smoke else (args.steps, 200)
    args.out_dir.mkdir(parents=True, exist_ok=True)

    source = Sinusoid(k_shot=5, n_query=10)
    test = fixed_episodes(Sinusoid(k_shot=5, n_query=50), n_episodes=n_test, seed=1234, tasks_per_batch=20)
    task, truth = Sinusoid(k_shot=5, n_query=1).sample_with_params(1, generator=torch.Generator().manual_seed(11))
    grid = torch.linspace(-5, 5, 200).reshape(1, -1, 1)

    fig_p = Figure(figsize=(8, 3), layout="constrained")
    pax = fig_p.subplots(1, 2, sharey=True)
    fig_b = Figure(figsize=(10, 5.5), layout="constrained")
    bax = fig_b.subplots(2, 3, sharex=True, sharey=True).ravel()
    scores: dict[str, dict[str, float]] = {}
    for i, (name, (factory, tasks_per_step)) in enumerate(LEARNERS.items()):
        torch.manual_seed(0)
        learner = factory()
        if name == "PLATIPUS":
            prior_panel(pax[0], learner, grid[0], "PLATIPUS prior, at initialization")
        start = time.perf_counter()
        MetaTrainer(learner, source, steps=steps, meta_batch_size=tasks_per_step, seed=0, progress=not args.smoke).fit()
        train_s = time.perf_counter() - start
        if name == "PLATIPUS":
            prior_panel(pax[1], learner, grid[0], f"after {steps} meta-steps")
        summary = evaluate(learner, test, method=name, progress=False).summary
        scores[name] = {m: round(summary[m].mean, 4) for m in ("mse", "nll", "coverage_90", "pit_error")}
        scores[name]["train_s"] = round(train_s, 1)

        # --8<-- [start:band]
        with torch.no_grad():
            pred = learner.predict(learner.adapt(task.support), grid)   # GaussianPredictive [M, 1, 200, 1]
            lo, hi = pred.interval(0.9)                                  # central 90% of the mixture
        # --8<-- [end:band]
        ax = bax[i]
        plot_regression_task(ax, grid, pred, truth=truth(grid), support=(task.support_x, task.support_y))
        ax.set_title(f"{name}: MSE {scores[name]['mse']:.2f}, 90% cov. {scores[name]['coverage_90']:.2f}", fontsize=9)
        ax.set_ylim(-6, 6)
    bax[0].legend(fontsize=7, loc="lower left")
    fig_b.suptitle(f"5-shot sinusoid, {steps} meta-steps each (test scores on {n_test} tasks)", fontsize=10)
    fig_b.savefig(args.out_dir / "bands_per_method.png", dpi=80)
    fig_p.savefig(args.out_dir / "prior_samples.png", dpi=80)
    rows = ["| method | MSE | NLL | 90% coverage | PIT error |", "|---|---|---|---|---|"]
    rows += [f"| {name} | {s['mse']:.3f} | {s['nll']:.2f} | {s['coverage_90']:.2f} | {s['pit_error']:.3f} |" for name, s in scores.items()]
    (args.out_dir / "which_method.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
    print(json.dumps({"steps": steps, "test_tasks": n_test, "scores": scores}))


if __name__ == "__main__":
    main()
