"""A few-shot medical risk study in the Python API: when should the model refer a chest X-ray?

    .venv/bin/python examples/medical_risk_study.py [--minutes 4] [--out medical_risk_study.png] [--smoke]

1. Meta-train a ProtoNet on MedNIST (random 2-way episodes of six imaging modalities).
2. Test it on PneumoniaMNIST as a clinic would see it: label 1 is always "pneumonia", the five
   labelled cases per class come from the train split, the queries from the official test split
   at its natural prevalence (62.5% pneumonia).
3. Report clinical metrics with 95% CIs over episodes, fit a referral rule on validation
   episodes (retained accuracy >= 90%) and apply it to the test episodes, and draw the referral
   and decision curves.

The whole study, for several methods and datasets with an HTML report, is one command:
``bayesmeta study examples/configs/medical/cross_domain_mednist.yaml``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from matplotlib.figure import Figure

from bayesmeta import MetaTrainer, ProtoNet, evaluate
from bayesmeta.metrics import (
    aggregate_clinical,
    clinical_metrics,
    decision_curve,
    fit_referral_rule,
    risk_coverage_curve,
)
from bayesmeta.models import Conv4
from bayesmeta.predictive import CategoricalPredictive
from bayesmeta.tasks import ClinicalSampler, fixed_episodes, medmnist, mednist


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=4.0, help="meta-training budget")
    ap.add_argument("--out", type=Path, default=Path("medical_risk_study.png"))
    ap.add_argument("--smoke", action="store_true", help="a few steps and episodes only (CI)")
    args = ap.parse_args(argv)

    torch.manual_seed(0)
    # --8<-- [start:train]
    learner = ProtoNet(Conv4(in_channels=1, norm="group", hidden=16 if args.smoke else 64))
    train = ClinicalSampler(mednist("train"), k_shot=5, n_query=10, class_identity="random", n_way=2)
    MetaTrainer(
        learner, train, steps=3 if args.smoke else 100_000, meta_batch_size=8, seed=0,
        max_minutes=None if args.smoke else args.minutes, progress=not args.smoke,
    ).fit()  # fmt: skip
    # --8<-- [end:train]

    # --8<-- [start:episodes]
    # clinical episodes: support from the train split, queries from val (fitting) / test (scoring)
    support = medmnist("pneumoniamnist", "train")
    design = {"k_shot": 5, "n_query": 10, "prevalence": "natural"}
    n = 4 if args.smoke else 200
    test_eps = fixed_episodes(ClinicalSampler(support, query=medmnist("pneumoniamnist", "test"), **design), n, 1234, 20)
    val_eps = fixed_episodes(ClinicalSampler(support, query=medmnist("pneumoniamnist", "val"), **design), n, 4321, 20)
    res = evaluate(learner, test_eps, method="protonet", progress=False)
    val = evaluate(learner, val_eps, method="protonet", progress=False)
    pred, y = CategoricalPredictive(logits=res.predictions["sample_log_probs"]), res.predictions["targets"]
    pred_val, y_val = CategoricalPredictive(logits=val.predictions["sample_log_probs"]), val.predictions["targets"]
    # --8<-- [end:episodes]
    print(res.table())

    # --8<-- [start:clinical]
    clinical = aggregate_clinical(clinical_metrics(pred, y, positive=1, target_specificity=0.9))
    for name, ci in clinical.items():
        print(f"{name:28s} {ci.mean:.3f}  95% CI [{ci.low:.3f}, {ci.high:.3f}]  ({ci.n} episodes)")
    # --8<-- [end:clinical]

    # --8<-- [start:referral]
    rule = fit_referral_rule(pred_val, y_val, objective="accuracy", target_accuracy=0.9, positive=1)
    outcome = rule.evaluate(pred, y)
    print(f"referral rule: refer when {rule.score} > {rule.tau:.4g} (fitted on validation episodes)")
    for name in ("referral_rate", "retained_accuracy", "retained_sensitivity"):
        ci = outcome.summary.get(name)
        print(f"  test {name:22s} " + ("undefined (every case referred)" if ci is None else f"{ci.mean:.3f} [{ci.low:.3f}, {ci.high:.3f}]"))
    # --8<-- [end:referral]

    rc = risk_coverage_curve(pred, y, rule.score)
    dc = decision_curve(pred, y, positive=1)
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(100 * (1 - rc.coverage.numpy()), 100 * (1 - rc.risk.numpy()), label="ProtoNet")
    ax1.plot(100 * outcome.pooled["referral_rate"], 100 * outcome.pooled["retained_accuracy"], "o", label="fitted rule (test)")
    ax1.axhline(90, ls="--", color="grey", label="target 90%")
    ax1.set(xlabel="cases referred (%)", ylabel="accuracy of retained cases (%)", title="Referral (PneumoniaMNIST)")
    ax1.legend(fontsize=8)
    ax2.plot(dc.thresholds, dc.net_benefit, label="ProtoNet")
    ax2.plot(dc.thresholds, dc.treat_all, ":", color="k", label="treat all")
    ax2.plot(dc.thresholds, dc.treat_none, color="k", lw=0.8, label="treat none")
    ax2.set(xlabel="threshold probability", ylabel="net benefit", title="Decision curve", ylim=(-0.1, 0.7))
    ax2.legend(fontsize=8)
    fig.savefig(args.out, dpi=100)
    print(f"figure written to {args.out}")


if __name__ == "__main__":
    main()
