"""ArviZ export: posterior draws and predictives as InferenceData, and what to do with them.

    .venv/bin/python examples/tutorials/arviz_export.py [--steps 1500] [--out-dir docs/assets/tutorials] [--smoke]

Meta-trains PLATIPUS and BMAML on 5-shot sinusoids, adapts both to the same test tasks and
exports each posterior (per-task draws or SVGD particles of the output layer) with its
predictive and the observed query targets to ``arviz.InferenceData``; then saves it to netCDF,
summarizes a per-task parameter, compares the two learners by PSIS-LOO ELPD over query points
(``az.compare``) and draws posterior-predictive checks (``arviz_ppc.png``). ``--smoke``: a few
steps and tasks, seconds.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import arviz as az
import torch
from matplotlib.figure import Figure

from bayesmeta import BMAML, MLP, PLATIPUS, MetaTrainer, Sinusoid, fixed_episodes
from bayesmeta.diagnostics import (
    load_inference_data,
    loo,
    plot_ppc,
    posterior_summary,
    save_inference_data,
    to_inference_data,
)
from bayesmeta.tasks import concat_tasks

FIGURES = Path(__file__).resolve().parents[2] / "docs" / "assets" / "tutorials"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1500, help="meta-steps per learner")
    ap.add_argument("--out-dir", type=Path, default=None,
                    help="where the figures go (default: docs/assets/tutorials; with --smoke a temporary folder)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, seconds (CI)")
    args = ap.parse_args(argv)
    args.out_dir = args.out_dir or (Path(tempfile.mkdtemp(prefix="bayesmeta-smoke-")) if args.smoke else FIGURES)
    steps, n_tasks = (3, 4) if args.smoke else (args.steps, 50)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    # PLATIPUS draws n_samples networks only when it adapts (training uses train_samples), so 200
    # posterior draws per task cost nothing in training; BMAML trains with all its 8 particles.
    learners = {
        "PLATIPUS": lambda: PLATIPUS(MLP(1, 1, hidden=(40, 40)), n_samples=200, task_kind="regression"),
        "BMAML": lambda: BMAML(MLP(1, 1, hidden=(40, 40)), n_particles=8, task_kind="regression"),
    }
    batch = concat_tasks(fixed_episodes(Sinusoid(k_shot=5, n_query=30), n_tasks, seed=1234, tasks_per_batch=n_tasks))
    idatas = {}
    for name, factory in learners.items():
        torch.manual_seed(0)
        learner = factory()
        MetaTrainer(learner, Sinusoid(k_shot=5, n_query=10), steps=steps, meta_batch_size=25, seed=0,
                    progress=not args.smoke).fit()
        # --8<-- [start:export]
        with torch.no_grad():
            posterior = learner.adapt(batch.support)            # params: {name: [T, M, *shape]}
            predictive = learner.predict(posterior, batch.query_x)  # GaussianPredictive [M, T, Q, 1]
        draws = {"head_bias": posterior.params["head.bias"].transpose(0, 1)}  # -> [M, T, 1]
        idata = to_inference_data(predictive, batch.query_y, posterior=draws, n_chains=1)
        # --8<-- [end:export]
        idatas[name] = idata

    # --8<-- [start:use]
    with tempfile.TemporaryDirectory() as tmp:                 # archive it next to the paper's runs
        save_inference_data(idatas["PLATIPUS"], Path(tmp) / "platipus.nc")
        reloaded = load_inference_data(Path(tmp) / "platipus.nc")
    summary = posterior_summary(reloaded, ["head_bias"], kind="stats")  # mean, sd, HDI per task
    elpd = {name: loo(idata, pointwise=True) for name, idata in idatas.items()}  # PSIS-LOO per (task, query)
    ranking = az.compare(idatas, ic="loo")                                # same tasks, same queries
    # --8<-- [end:use]
    lines = ["PLATIPUS, posterior of the output bias (first 3 tasks):", summary.head(3).to_string(), ""]
    for name, res in elpd.items():
        lines.append(f"{name}: elpd_loo {float(res.elpd_loo):.1f} (se {float(res.se):.1f}), "
                     f"Pareto k > 0.7 at {int((res.pareto_k > 0.7).sum())} of {res.pareto_k.size} points")
    lines += ["", "az.compare:", ranking[["rank", "elpd_loo", "elpd_diff", "dse", "weight"]].round(2).to_string()]
    print("\n".join(lines))
    (args.out_dir / "arviz.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")

    fig = Figure(figsize=(9, 3.2), layout="constrained")
    for ax, (name, idata) in zip(fig.subplots(1, 2, sharey=True), idatas.items()):
        plot_ppc(idata, ax=ax, num_pp_samples=8)
        ax.set_title(f"{name}: posterior predictive check ({n_tasks} tasks)", fontsize=9)
    fig.savefig(args.out_dir / "arviz_ppc.png", dpi=80)


if __name__ == "__main__":
    main()
