"""DKT against MAML on the DKT sinusoid protocol, and (``--omniglot``) against ProtoNets.

Prints one JSON object. Every method trains with the same Adam loop on the same stream of
training tasks (one seeded generator per method, same seed) and is evaluated on the very same
fixed episodes (:func:`bayesmeta.tasks.fixed_episodes`).

Sinusoid protocol (Patacchiola et al. 2020, section 4.1): ``y = A sin(x - phi) + N(0, 0.1^2)``,
``A ~ U(0.1, 5)``, ``phi ~ U(0, pi)``. Training tasks have 10 points in [-5, 5] (5 support + 5
query; DKT fits its marginal likelihood to all 10, as the reference code does). Each evaluation
task has 200 points: 5 support, the other 195 query. Three conditions:

- ``in_range``: all 200 points in [-5, 5];
- ``out_of_range``: all 200 points in [-5, 10], support included (the paper's out-of-range
  condition, ``test_range=(-5, 10)`` in the reference code);
- ``extrapolation``: support in [-5, 5], query in [5, 10] (strict extrapolation).

Omniglot: 5-way 1-shot, 15 queries per class, Vinyals split with rotations, Conv4 with
GroupNorm (so a point's features do not depend on which other points share its batch, which
matters for DKT's separate support and query passes), DKT one-vs-rest GPs with a fixed noise of
0.1 (as in the paper) against ProtoNets on the same backbone.

Usage::

    .venv/bin/python benchmarks/bench_dkt.py                 # sinusoid, a few minutes on 2 cores
    .venv/bin/python benchmarks/bench_dkt.py --omniglot      # + Omniglot 5-way 1-shot
    .venv/bin/python benchmarks/bench_dkt.py --smoke         # seconds; checks the script runs
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from bayesmeta.exceptions import BayesMetaError
from bayesmeta.inference.base import MetaLearner
from bayesmeta.inference.dkt import DKT
from bayesmeta.metrics.aggregation import mean_ci
from bayesmeta.metrics.classification import accuracy, categorical_nll, ece
from bayesmeta.metrics.regression import coverage, gaussian_nll, mse, pit_calibration_error
from bayesmeta.models import MLP, Conv4
from bayesmeta.tasks import FewShotSampler, Sinusoid, TaskBatch, fixed_episodes, omniglot

Source = Callable[[int, torch.Generator], TaskBatch]


def _train(
    learner: MetaLearner, sample: Source, steps: int, meta_batch: int, lr: float, seed: int, desc: str = "train"
) -> dict[str, float]:
    """Plain Adam on ``meta_loss``; returns the wall time and the last step's metrics."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(learner.parameters(), lr=lr)
    learner.train()
    t0 = time.perf_counter()
    last: dict[str, float] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in tqdm(range(steps), desc=desc, mininterval=10.0, file=sys.stderr):
            out = learner.meta_loss(sample(meta_batch, gen))
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()
            last = dict(out.metrics)
    last["train_seconds"] = time.perf_counter() - t0
    last["warnings"] = float(len(caught))
    return last


def _summ(values: list[torch.Tensor]) -> dict[str, float]:
    v = torch.cat(values).double()
    ci = mean_ci(v, seed=0)
    return {"mean": ci.mean, "lo": ci.low, "hi": ci.high}


def _eval_regression(learner: MetaLearner, episodes: Sequence[TaskBatch]) -> dict[str, dict[str, float]]:
    learner.eval()
    acc: dict[str, list[torch.Tensor]] = {"mse": [], "nll": [], "pit_error": [], "coverage_90": []}
    with torch.no_grad():
        for b in episodes:
            p = learner(b)
            acc["mse"].append(mse(p, b.query_y))
            acc["nll"].append(gaussian_nll(p, b.query_y))
            acc["pit_error"].append(pit_calibration_error(p, b.query_y))
            acc["coverage_90"].append(coverage(p, b.query_y, 0.9))
    return {k: _summ(v) for k, v in acc.items()}


def _eval_classification(learner: MetaLearner, episodes: Sequence[TaskBatch]) -> dict[str, dict[str, float]]:
    learner.eval()
    acc: dict[str, list[torch.Tensor]] = {"accuracy": [], "ece": [], "nll": []}
    pooled_p, pooled_y = [], []
    with torch.no_grad():
        for b in episodes:
            p = learner(b)
            acc["accuracy"].append(accuracy(p, b.query_y))
            acc["ece"].append(ece(p, b.query_y))
            acc["nll"].append(categorical_nll(p, b.query_y))
            pooled_p.append(p.probs.reshape(-1, p.n_classes))
            pooled_y.append(b.query_y.reshape(-1))
    out = {k: _summ(v) for k, v in acc.items()}
    # per-task ECE on 75 points is dominated by binning noise; the pooled ECE is the usual figure
    out["ece_pooled"] = {"mean": float(ece(torch.cat(pooled_p), torch.cat(pooled_y)))}
    return out


def sinusoid(args: argparse.Namespace) -> dict[str, object]:
    train_src = Sinusoid(k_shot=5, n_query=5, noise_std=0.1)
    conditions = {
        "in_range": Sinusoid(k_shot=5, n_query=195, x_range=(-5, 5), noise_std=0.1),
        "out_of_range": Sinusoid(k_shot=5, n_query=195, x_range=(-5, 10), noise_std=0.1),
        "extrapolation": Sinusoid(k_shot=5, n_query=195, x_range=(-5, 5), query_x_range=(5, 10), noise_std=0.1),
    }
    episodes = {k: fixed_episodes(src, args.episodes, seed=1234, tasks_per_batch=args.tasks_per_episode)
                for k, src in conditions.items()}

    def make(name: str) -> MetaLearner:
        torch.manual_seed(args.seed)
        net = MLP(1, 1, hidden=(40, 40))
        if name == "dkt_rbf":
            return DKT(net, kernel="rbf", task_kind="regression")
        if name == "dkt_spectral":
            return DKT(net, kernel="spectral", n_mixtures=4, task_kind="regression")
        from bayesmeta.inference import MAML  # noqa: PLC0415 - optional until the lead's MAML lands

        # one inner step at training and test time: the DKT paper's "MAML (1 step)" baseline
        return MAML(net, inner_lr=0.01, inner_steps=1, test_inner_steps=args.maml_test_steps, task_kind="regression")

    results: dict[str, object] = {}
    for name in args.methods:
        learner = make(name)
        train = _train(learner, train_src.sample, args.steps, args.meta_batch_size, args.lr, args.seed, name)
        res: dict[str, object] = {"train": train}
        for cond, eps in episodes.items():
            try:
                res[cond] = _eval_regression(learner, eps)
            except BayesMetaError as err:  # e.g. a diverged inner loop: record it, keep the others
                res[cond] = {"error": f"{type(err).__name__}: {err}"}
        results[name] = res
    return {
        "protocol": "DKT sinusoid: noise 0.1, A~U(0.1,5), phi~U(0,pi); train 5+5 points in [-5,5]; "
        "eval 5 support + 195 query",
        "n_eval_tasks": args.episodes * args.tasks_per_episode,
        "steps": args.steps,
        "meta_batch_size": args.meta_batch_size,
        "lr": args.lr,
        "maml": {"inner_lr": 0.01, "inner_steps": 1, "test_inner_steps": args.maml_test_steps},
        "results": results,
    }


def omniglot_bench(args: argparse.Namespace) -> dict[str, object]:
    from bayesmeta.inference import ProtoNet  # noqa: PLC0415

    train_s = FewShotSampler(omniglot("train"), n_way=5, k_shot=1, n_query=args.omniglot_train_query)
    test_s = FewShotSampler(omniglot("test"), n_way=5, k_shot=1, n_query=15)
    episodes = fixed_episodes(test_s, args.omniglot_episodes, seed=1234, tasks_per_batch=4)
    results: dict[str, object] = {}
    for name in ("dkt", "protonet"):
        torch.manual_seed(args.seed)
        net = Conv4(hidden=64, norm="group")
        learner: MetaLearner
        if name == "protonet":
            learner = ProtoNet(net)
        else:
            learner = DKT(net, kernel="rbf", task_kind="classification", n_way=5, noise_init=0.1,
                          learn_noise=False, class_probs="max")
        train = _train(learner, train_s.sample, args.omniglot_steps, args.omniglot_meta_batch_size, 1e-3, args.seed,
                       f"omniglot {name}")
        results[name] = {"train": train, "test": _eval_classification(learner, episodes)}
        if isinstance(learner, DKT):
            # class_probs only changes how predict turns scores into probabilities: same weights
            for variant in ("max_noisy", "softmax"):
                learner.class_probs = variant
                results[f"dkt_{variant}"] = {"train": "same weights as dkt",
                                             "test": _eval_classification(learner, episodes)}
    return {
        "protocol": "Omniglot (Vinyals split, rotations) 5-way 1-shot, 15 query/class, Conv4-64 GroupNorm",
        "n_eval_tasks": args.omniglot_episodes * 4,
        "steps": args.omniglot_steps,
        "meta_batch_size": args.omniglot_meta_batch_size,
        "train_query_per_class": args.omniglot_train_query,
        "results": results,
    }


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--meta-batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--episodes", type=int, default=50, help="evaluation batches per condition")
    ap.add_argument("--tasks-per-episode", type=int, default=4)
    ap.add_argument("--methods", nargs="+", default=["dkt_rbf", "dkt_spectral", "maml"])
    ap.add_argument("--maml-test-steps", type=int, default=1)
    ap.add_argument("--omniglot", action="store_true", help="also run Omniglot 5-way 1-shot")
    ap.add_argument("--no-sinusoid", action="store_true", help="skip the sinusoid part")
    ap.add_argument("--omniglot-steps", type=int, default=1000)
    ap.add_argument("--omniglot-episodes", type=int, default=50)
    ap.add_argument("--omniglot-meta-batch-size", type=int, default=4)
    ap.add_argument("--omniglot-train-query", type=int, default=5, help="query examples per class in training")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="tiny run to check the script")
    args = ap.parse_args(argv)
    if args.smoke:
        args.steps, args.episodes, args.omniglot_steps, args.omniglot_episodes = 20, 2, 3, 2
    torch.set_num_threads(args.threads)
    # exp() of large squared distances underflows into float32 denormals, which are ~100x slower
    # on CPUs; flushing them to zero changes no result visible at float32 precision.
    torch.set_flush_denormal(True)
    t0 = time.perf_counter()
    out: dict[str, object] = {
        "benchmark": "bench_dkt",
        "date": datetime.date.today().isoformat(),
        "machine": {
            "threads": args.threads,
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "command": " ".join([os.path.relpath(sys.executable), *sys.argv]),
    }
    if not args.no_sinusoid:
        out["sinusoid"] = sinusoid(args)
    if args.omniglot:
        out["omniglot"] = omniglot_bench(args)
    out["total_seconds"] = time.perf_counter() - t0
    json.dump(out, sys.stdout, indent=2, default=lambda v: v if not isinstance(v, float) or math.isfinite(v) else str(v))
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
