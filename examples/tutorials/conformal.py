"""Conformal prediction sets and intervals with a coverage guarantee across tasks.

    .venv/bin/python examples/tutorials/conformal.py [--steps 300] [--out-dir docs/assets/tutorials] [--smoke]

Classification: a ProtoNet on Omniglot 5-way 1-shot; split-conformal sets (LAC, APS, RAPS) are
calibrated on the pooled query points of calibration tasks and scored on other test tasks drawn
from the same distribution, for several levels alpha. Regression: MAML on 10-shot sinusoids with
conformal intervals (normalized residual score). Prints one JSON object and draws
``conformal.png`` (coverage and set size against alpha; one task's intervals). ``--smoke``:
a few steps and tasks, seconds.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from matplotlib.figure import Figure

from bayesmeta import (
    MAML,
    MLP,
    Conv4,
    FewShotSampler,
    MetaTrainer,
    ProtoNet,
    Sinusoid,
    evaluate,
    fixed_episodes,
    omniglot,
)
from bayesmeta.calibration import SplitConformal, conformal_metrics
from bayesmeta.predictive import CategoricalPredictive, GaussianPredictive

FIGURES = Path(__file__).resolve().parents[2] / "docs" / "assets" / "tutorials"
ALPHAS = (0.05, 0.1, 0.2, 0.3)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300, help="ProtoNet meta-steps (MAML gets 5x as many)")
    ap.add_argument("--out-dir", type=Path, default=None,
                    help="where the figures go (default: docs/assets/tutorials; with --smoke a temporary folder)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, seconds (CI)")
    args = ap.parse_args(argv)
    args.out_dir = args.out_dir or (Path(tempfile.mkdtemp(prefix="bayesmeta-smoke-")) if args.smoke else FIGURES)
    steps, n_tasks, hidden = (2, 20, 8) if args.smoke else (args.steps, 300, 32)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)

    # ---- classification: ProtoNet on Omniglot 5-way 1-shot
    learner = ProtoNet(Conv4(hidden=hidden))
    MetaTrainer(learner, FewShotSampler(omniglot("train"), n_way=5, k_shot=1, n_query=15), steps=steps,
                meta_batch_size=4, seed=0, progress=not args.smoke).fit()
    # --8<-- [start:classification]
    # Calibration and test tasks come from the same distribution (the Omniglot test characters),
    # drawn with different seeds: that exchangeability is what the guarantee needs.
    tasks = FewShotSampler(omniglot("test"), n_way=5, k_shot=1, n_query=15)
    cal, test = (evaluate(learner, fixed_episodes(tasks, n_tasks, seed, 20), progress=False).predictions
                 for seed in (1, 2))
    cal_pred = CategoricalPredictive(logits=cal["sample_log_probs"])          # [M, T, Q, C]
    test_pred = CategoricalPredictive(logits=test["sample_log_probs"])
    results = {}
    for score in ("lac", "aps", "raps"):
        for alpha in ALPHAS:
            cp = SplitConformal(alpha=alpha, score=score).fit(cal_pred, cal["targets"])
            sets = cp.predict(test_pred)                                      # bool [T, Q, C]
            m = conformal_metrics(sets, test["targets"])                      # per task, [T] each
            results[f"{score} {alpha}"] = {k: round(float(v.mean()), 4) for k, v in m.items()}
    # --8<-- [end:classification]
    accuracy = float((test_pred.probs.argmax(-1) == test["targets"]).double().mean())

    # ---- regression: MAML on sinusoids, conformal intervals
    maml = MAML(MLP(1, 1, hidden=(40, 40)), inner_lr=0.01, test_inner_steps=10, task_kind="regression")
    MetaTrainer(maml, Sinusoid(k_shot=10, n_query=10), steps=5 * steps, meta_batch_size=25, seed=0,
                progress=not args.smoke).fit()
    # --8<-- [start:regression]
    sin_cal, sin_test = (evaluate(maml, fixed_episodes(Sinusoid(k_shot=10, n_query=20), n_tasks, seed, 50),
                                  progress=False).predictions for seed in (3, 4))
    gauss = {k: GaussianPredictive(p["sample_mean"], p["sample_variance"]) for k, p in (("cal", sin_cal), ("test", sin_test))}
    cp_reg = SplitConformal(alpha=0.1, score="normalized").fit(gauss["cal"], sin_cal["targets"])
    intervals = cp_reg.predict(gauss["test"])                                 # [T, Q, Dy, 2]
    reg = {k: round(float(v.mean()), 4) for k, v in conformal_metrics(intervals, sin_test["targets"]).items()}
    lo, hi = gauss["test"].interval(0.9)                                      # the model's own 90% interval
    inside = (sin_test["targets"] >= lo) & (sin_test["targets"] <= hi)
    # --8<-- [end:regression]
    reg["model_interval_coverage"] = round(float(inside.double().mean()), 4)
    reg["model_interval_width"] = round(float((hi - lo).mean()), 4)
    print(json.dumps({"steps": steps, "tasks": n_tasks, "protonet_accuracy": round(accuracy, 4),
                      "classification": results, "regression_alpha_0.1": reg}))

    rows = ["| score | alpha | test coverage | mean set size | empty sets |", "|---|---|---|---|---|"]
    rows += [f"| {key.split()[0]} | {key.split()[1]} | {m['conformal_coverage']:.3f} | {m['conformal_set_size']:.2f} | "
             f"{m['conformal_empty_rate']:.3f} |" for key, m in results.items()]
    (args.out_dir / "conformal.txt").write_text(
        "\n".join(rows) + f"\n\nProtoNet accuracy on the test tasks: {accuracy:.3f}. Sinusoid, alpha = 0.1: conformal "
        f"intervals cover {reg['conformal_coverage']:.3f} (mean width {reg['conformal_width']:.2f}); MAML's own 90% "
        f"intervals cover {reg['model_interval_coverage']:.3f} (mean width {reg['model_interval_width']:.2f}).\n",
        encoding="utf-8")
    fig = Figure(figsize=(11, 3.3), layout="constrained")
    ax_cov, ax_size, ax_reg = fig.subplots(1, 3)
    for score in ("lac", "aps", "raps"):
        ax_cov.plot([1 - a for a in ALPHAS], [results[f"{score} {a}"]["conformal_coverage"] for a in ALPHAS], "o-", label=score)
        ax_size.plot(ALPHAS, [results[f"{score} {a}"]["conformal_set_size"] for a in ALPHAS], "o-", label=score)
    ax_cov.plot([0.65, 1], [0.65, 1], "k:", lw=1, label="1 - alpha")
    ax_cov.set(xlabel="target coverage 1 - alpha", ylabel="test coverage", title="Omniglot 5-way 1-shot: coverage")
    ax_size.set(xlabel="alpha", ylabel="mean set size (classes)", title="set size")
    ax_cov.legend(fontsize=8)
    ax_size.legend(fontsize=8)
    t = 0  # the first test task (the same fixed episodes as above), queries sorted by x
    x = fixed_episodes(Sinusoid(k_shot=10, n_query=20), n_tasks, 4, 50)[0].query_x[t, :, 0]
    order = torch.argsort(x)
    ax_reg.plot(x[order], gauss["test"].mean[t, order, 0], label="MAML mean")
    ax_reg.fill_between(x[order], lo[t, order, 0], hi[t, order, 0], alpha=0.25, label="model 90% interval")
    ax_reg.plot(x[order], intervals[t, order, 0, 0], "g--", lw=1, label="conformal 90%")
    ax_reg.plot(x[order], intervals[t, order, 0, 1], "g--", lw=1)
    ax_reg.scatter(x, sin_test["targets"][t, :, 0], c="k", s=8, zorder=3, label="query targets")
    ax_reg.set(xlabel="x", ylabel="y", title="sinusoid: one test task")
    ax_reg.legend(fontsize=7)
    fig.savefig(args.out_dir / "conformal.png", dpi=80)


if __name__ == "__main__":
    main()
