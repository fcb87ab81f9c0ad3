"""Calibration on Omniglot and sinusoids: ECE/NLL before and after temperature (variance)
scaling, split-conformal coverage and set size (interval width) per learner, and a deep ensemble
against its single base learner. Prints one JSON object per call.

Run in pieces, each under the shared CPU lock and well under 5 minutes at one thread:

    B=".venv/bin/python benchmarks/bench_calibration.py --root runs/bench_cal"
    flock /tmp/bayesmeta-cpu.lock $B train sinusoid-maml
    flock /tmp/bayesmeta-cpu.lock $B train sinusoid-ensemble
    flock /tmp/bayesmeta-cpu.lock $B train omniglot-protonet
    flock /tmp/bayesmeta-cpu.lock $B train omniglot-ensemble
    flock /tmp/bayesmeta-cpu.lock $B evaluate sinusoid-maml sinusoid-ensemble
    flock /tmp/bayesmeta-cpu.lock $B evaluate omniglot-protonet omniglot-ensemble
    flock /tmp/bayesmeta-cpu.lock $B cost

``train`` meta-trains one configuration (training budget in the JSON: steps, minutes).
``evaluate`` fits every calibrator on the run's validation episodes (never the test episodes) and
reports raw vs calibrated metrics on the fixed test episodes (mean and 95% bootstrap CI over
tasks); for LAC it also checks the conformal quantile against MAPIE's on the same scores.
``cost`` times one meta-step (loss + backward) of a base learner and of a 3-member ensemble of
it, interleaved (A, B, A, B, ...), and reports the median ratio: the ensemble's training cost.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bayesmeta.calibration import SplitConformal
from bayesmeta.config import build_episodes, build_learner, build_task_source, resolve_config
from bayesmeta.evaluation import evaluate
from bayesmeta.runs import load_learner, train_run

_SIN_TASKS = {"name": "sinusoid", "k_shot": 10, "n_query": 10}
_SIN_EVAL = {"n_episodes": 600, "seed": 1234, "tasks_per_batch": 100}
_OMNI_TASKS = {"name": "omniglot", "n_way": 5, "k_shot": 1, "n_query": 15}
_OMNI_EVAL = {"n_episodes": 600, "seed": 1234, "tasks_per_batch": 50}
# Conv4 with GroupNorm: the default task-local norm costs ~3x per step on this CPU, which would not
# fit the ensemble's 3 x 300 member-steps into one 5-minute locked piece.

CONFIGS: dict[str, dict[str, Any]] = {
    "sinusoid-maml": {
        "method": {"name": "maml", "inner_lr": 0.01, "inner_steps": 1},
        "model": {"name": "mlp", "hidden": [40, 40]},
        "tasks": _SIN_TASKS,
        "training": {"steps": 10000, "meta_batch_size": 25, "lr": 1e-3, "seed": 0, "val_episodes": 200,
                     "val_every": 1000, "checkpoint_every": 1000, "max_minutes": 4.0},
        "evaluation": _SIN_EVAL,
    },
    "sinusoid-ensemble": {
        "method": {"name": "ensemble", "members": 3, "base": {"name": "maml", "inner_lr": 0.01, "inner_steps": 1}},
        "model": {"name": "mlp", "hidden": [40, 40]},
        "tasks": _SIN_TASKS,
        "training": {"steps": 10000, "meta_batch_size": 25, "lr": 1e-3, "seed": 0, "val_episodes": 200,
                     "val_every": 1000, "checkpoint_every": 1000, "max_minutes": 4.5},
        "evaluation": _SIN_EVAL,
    },
    "omniglot-protonet": {
        "method": {"name": "protonet"},
        "model": {"name": "conv4", "hidden": 32, "norm": "group"},
        "tasks": _OMNI_TASKS,
        "training": {"steps": 300, "meta_batch_size": 4, "lr": 1e-3, "seed": 0, "val_episodes": 100,
                     "val_every": 150, "checkpoint_every": 150, "max_minutes": 2.0},
        "evaluation": _OMNI_EVAL,
    },
    "omniglot-ensemble": {
        "method": {"name": "ensemble", "members": 3, "base": {"name": "protonet"}},
        "model": {"name": "conv4", "hidden": 32, "norm": "group"},
        "tasks": _OMNI_TASKS,
        "training": {"steps": 300, "meta_batch_size": 4, "lr": 1e-3, "seed": 0, "val_episodes": 100,
                     "val_every": 150, "checkpoint_every": 150, "max_minutes": 4.5},
        "evaluation": _OMNI_EVAL,
    },
}

_CLS = ("accuracy", "nll", "ece", "brier")
_REG = ("mse", "nll", "pit_error", "coverage_90")


def _ci(s: Any) -> dict[str, float]:
    return {"mean": round(s.mean, 4), "low": round(s.low, 4), "high": round(s.high, 4)}


def _train(name: str, root: Path) -> dict[str, Any]:
    t0 = time.time()
    res = train_run(CONFIGS[name], root / name, progress=False)
    return {"piece": f"train {name}", "steps": res.steps, "minutes": round((time.time() - t0) / 60, 2),
            "best_val": res.best_val, "best_step": res.best_step}


def _mapie_lac_qhat(probs: np.ndarray, y: np.ndarray, alpha: float) -> float | None:
    try:
        from mapie.classification import SplitConformalClassifier
        from sklearn.base import BaseEstimator, ClassifierMixin
    except ImportError:
        return None

    class _Probs(ClassifierMixin, BaseEstimator):
        def fit(self, x: np.ndarray, t: np.ndarray) -> _Probs:
            self.classes_ = np.arange(probs.shape[1])
            self.n_features_in_ = x.shape[1]
            return self

        def predict_proba(self, x: np.ndarray) -> np.ndarray:
            return x

        def predict(self, x: np.ndarray) -> np.ndarray:
            return x.argmax(1)

    m = SplitConformalClassifier(_Probs().fit(probs, y), confidence_level=1 - alpha, conformity_score="lac", prefit=True)
    m.conformalize(probs, y)
    m.predict_set(probs[:1])  # MAPIE computes its quantile when it first predicts
    return float(np.asarray(m._mapie_classifier.quantiles_).reshape(-1)[0])


def _evaluate(name: str, root: Path) -> dict[str, Any]:
    learner, cfg = load_learner(root / name, "best")
    test, val = build_episodes(cfg, "test"), build_episodes(cfg, "val", evaluation_tasks=True)
    seed = int(cfg["evaluation"]["seed"])
    kind = "classification" if test[0].is_classification else "regression"
    keys = _CLS if kind == "classification" else _REG
    out: dict[str, Any] = {"piece": f"evaluate {name}", "test_tasks": sum(b.n_tasks for b in test),
                           "calibration_tasks": sum(b.n_tasks for b in val)}
    if hasattr(learner, "training_cost"):
        out["training_cost"] = learner.training_cost
    t0 = time.time()
    res = evaluate(learner, test, method=name, progress=False, seed=seed, calibrator="temperature", calibration_episodes=val)
    assert res.calibrated is not None
    out["raw"] = {k: _ci(res.summary[k]) for k in keys}
    out["temperature"] = {"calibrator": res.calibrated.calibrator, **{k: _ci(res.calibrated.summary[k]) for k in keys}}
    scores = ("lac", "aps", "raps") if kind == "classification" else ("normalized", "cqr")
    for score in scores:
        cp = SplitConformal(alpha=0.1, score=score)
        r = evaluate(learner, test, method=name, progress=False, seed=seed, calibrator=cp, calibration_episodes=val)
        assert r.calibrated is not None
        out[f"conformal_{score}"] = {k: _ci(v) for k, v in r.calibrated.summary.items()}
        out[f"conformal_{score}"]["qhat"] = r.calibrated.calibrator["qhat"]
        if score == "lac":
            with torch.no_grad():
                preds = [learner(b) for b in val]
            probs = torch.cat([p.probs.reshape(-1, p.n_classes) for p in preds]).double().numpy()
            y = torch.cat([b.query_y.reshape(-1) for b in val]).numpy()
            probs = probs / probs.sum(1, keepdims=True)
            out["conformal_lac"]["mapie_qhat"] = _mapie_lac_qhat(probs, y, 0.1)
    out["evaluate_minutes"] = round((time.time() - t0) / 60, 2)
    return out


def _cost(repeats: int) -> dict[str, Any]:
    out: dict[str, Any] = {"piece": "cost", "repeats": repeats}
    for name, base in (("sinusoid", "sinusoid-maml"), ("omniglot", "omniglot-protonet")):
        single_cfg = resolve_config(CONFIGS[base])
        ens_cfg = resolve_config({**CONFIGS[base], "method": {"name": "ensemble", "members": 3, "base": CONFIGS[base]["method"]}})
        a, b = build_learner(single_cfg), build_learner(ens_cfg)
        batch = build_task_source(single_cfg, "train").sample(int(single_cfg["training"]["meta_batch_size"]), torch.Generator().manual_seed(0))
        ratios, ta, tb = [], [], []
        for i in range(repeats + 2):
            times = []
            for learner in (a, b):
                learner.zero_grad(set_to_none=True)
                t0 = time.perf_counter()
                learner.meta_loss(batch).loss.backward()
                times.append(time.perf_counter() - t0)
            if i >= 2:  # two warm-ups
                ta.append(times[0])
                tb.append(times[1])
                ratios.append(times[1] / times[0])
        out[name] = {"single_ms": round(1e3 * statistics.median(ta), 2), "ensemble3_ms": round(1e3 * statistics.median(tb), 2),
                     "median_ratio": round(statistics.median(ratios), 2)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("piece", choices=("train", "evaluate", "cost"))
    ap.add_argument("names", nargs="*", help=f"configurations: {', '.join(CONFIGS)}")
    ap.add_argument("--root", type=Path, default=Path("runs/bench_cal"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    unknown = [n for n in args.names if n not in CONFIGS]
    if unknown:
        ap.error(f"unknown configuration(s) {unknown}; valid: {', '.join(CONFIGS)}")
    torch.set_num_threads(args.threads)
    meta = {"torch": torch.__version__, "threads": args.threads, "utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    if args.piece == "cost":
        print(json.dumps({**meta, **_cost(args.repeats)}, indent=2))
        return
    results = [(_train if args.piece == "train" else _evaluate)(n, args.root) for n in args.names]
    print(json.dumps({**meta, "results": results}, indent=2))


if __name__ == "__main__":
    main()
