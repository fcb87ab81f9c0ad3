"""Amortized learners: CNP/NP/ANP (and VERSA regression) on GP curves and sinusoids, and
(``--omniglot``) VERSA against ProtoNets on Omniglot 5-way 1-shot and 5-shot.

Prints one JSON object. Every learner trains with the same plain Adam loop on the same stream of
training tasks (one seeded generator, same seed for every learner) and is evaluated on the very
same fixed episodes (:func:`bayesmeta.tasks.fixed_episodes`, seed 1234).

Regression protocols:

- ``gp_curves``: the neural-process papers' GP data (:class:`bayesmeta.tasks.gp_curves.GPCurves`):
  RBF kernel with l ~ U(0.1, 0.6), s ~ U(0.1, 1), noise 0.02, x in [-2, 2]; 3..50 context points,
  50 held-out target points. The GP posterior under the true hyperparameters is reported as
  ``gp_oracle`` (the Bayes-optimal predictive).
- ``sinusoid``: MAML's sinusoids (A ~ U(0.1, 5), phase ~ U(0, pi), x in [-5, 5], noiseless),
  10 context points and 50 held-out targets.

Metrics per task, then mean and 95% bootstrap interval over tasks: ``nll`` (per target point,
nats), ``mse`` of the predictive mean, ``pit_error`` (Wasserstein-1 distance of the PIT values
from uniform, 0 = calibrated) and ``coverage_90`` (fraction of targets in the central 90%
interval), all on the held-out targets; ``context_nll`` is the NLL of the context points
themselves (how well a model fits what it was shown).

Usage::

    .venv/bin/python benchmarks/bench_amortized.py                # ~15 min on 2 cores
    .venv/bin/python benchmarks/bench_amortized.py --omniglot     # + VERSA vs ProtoNets
    .venv/bin/python benchmarks/bench_amortized.py --smoke        # seconds; checks the script
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
from collections.abc import Callable, Sequence

import torch
from torch import nn

from bayesmeta.inference.anp import ANP
from bayesmeta.inference.base import MetaLearner
from bayesmeta.inference.cnp import CNP
from bayesmeta.inference.latent_np import NP
from bayesmeta.inference.versa import VERSA
from bayesmeta.metrics.aggregation import mean_ci
from bayesmeta.metrics.classification import accuracy, categorical_nll, ece
from bayesmeta.metrics.regression import coverage, gaussian_nll, mse, pit_calibration_error
from bayesmeta.predictive import GaussianPredictive
from bayesmeta.tasks import Sinusoid, TaskBatch, fixed_episodes
from bayesmeta.tasks.gp_curves import GPCurveParams, GPCurves

Source = Callable[[int, torch.Generator], TaskBatch]


class _HeadlessMLP(nn.Module):
    """ReLU MLP feature extractor without a head (every parameter feeds ``features``)."""

    def __init__(self, in_features: int, hidden: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.body = nn.Sequential(*layers)
        self.feature_dim = width

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _train(learner: MetaLearner, sample: Source, steps: int, meta_batch: int, lr: float, seed: int) -> dict[str, float]:
    """Plain Adam on ``meta_loss``; returns the wall time and the mean metrics of the last 100 steps."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(learner.parameters(), lr=lr)
    learner.train()
    t0 = time.perf_counter()
    tail: list[dict[str, float]] = []
    for step in range(steps):
        out = learner.meta_loss(sample(meta_batch, gen))
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        if step >= steps - 100:
            tail.append(out.metrics)
    res = {k: sum(m[k] for m in tail) / len(tail) for k in tail[-1]} if tail else {}
    res["train_seconds"] = time.perf_counter() - t0
    return res


def _summ(values: list[torch.Tensor]) -> dict[str, float]:
    ci = mean_ci(torch.cat(values).double(), seed=0)
    return {"mean": ci.mean, "lo": ci.low, "hi": ci.high}


def _eval_regression(
    predict: Callable[[TaskBatch], tuple[GaussianPredictive, GaussianPredictive | None]],
    episodes: Sequence[TaskBatch],
) -> dict[str, dict[str, float]]:
    """Per-task metrics; ``predict`` returns the target predictive and the context predictive."""
    acc: dict[str, list[torch.Tensor]] = {
        "nll": [], "mse": [], "pit_error": [], "coverage_90": [], "context_nll": []
    }
    with torch.no_grad():
        for b in episodes:
            p, pc = predict(b)
            acc["nll"].append(gaussian_nll(p, b.query_y))
            acc["mse"].append(mse(p, b.query_y))
            acc["pit_error"].append(pit_calibration_error(p, b.query_y))
            acc["coverage_90"].append(coverage(p, b.query_y, 0.9))
            if pc is not None:
                acc["context_nll"].append(gaussian_nll(pc, b.support_y, b.support_mask))
    return {k: _summ(v) for k, v in acc.items() if v}


def _learner_predict(learner: MetaLearner) -> Callable[[TaskBatch], tuple[GaussianPredictive, GaussianPredictive]]:
    def predict(b: TaskBatch) -> tuple[GaussianPredictive, GaussianPredictive]:
        # a fixed generator per episode: the latent samples do not depend on evaluation order
        post = learner.adapt(b.support, generator=torch.Generator().manual_seed(0))  # type: ignore[call-arg]
        p = learner.predict(post, b.query_x)
        pc = learner.predict(post, b.support_x)
        assert isinstance(p, GaussianPredictive) and isinstance(pc, GaussianPredictive)
        return p, pc

    return predict


def _oracle_predict(
    family: GPCurves, params: dict[int, GPCurveParams]
) -> Callable[[TaskBatch], tuple[GaussianPredictive, GaussianPredictive]]:
    """The exact GP predictive of each episode (keyed by ``id`` of the episode's batch)."""

    def predict(b: TaskBatch) -> tuple[GaussianPredictive, GaussianPredictive]:
        prm = params[id(b)]
        return (family.exact_predictive(b.support, b.query_x, prm),
                family.exact_predictive(b.support, b.support_x, prm))

    return predict


def _make_regression(name: str, hidden: int, seed: int) -> MetaLearner:
    torch.manual_seed(seed)
    if name == "cnp":
        return CNP(hidden=hidden, r_dim=hidden)
    if name == "np":
        return NP(hidden=hidden, r_dim=hidden, z_dim=hidden, n_samples=32)
    if name == "anp":
        return ANP(hidden=hidden, r_dim=hidden, z_dim=hidden, n_samples=32)
    if name == "versa":
        return VERSA(_HeadlessMLP(1, (hidden, hidden)), task_kind="regression", hidden=hidden, n_samples=32)
    raise ValueError(f"unknown model {name!r}")


def regression(args: argparse.Namespace) -> dict[str, object]:
    families: dict[str, tuple[object, object, str]] = {
        "gp_curves": (
            GPCurves(min_context=3, max_context=50, n_target=50),
            GPCurves(min_context=3, max_context=50, n_target=50),
            "GP curves (NP papers): RBF l~U(0.1,0.6), s~U(0.1,1), noise 0.02, x in [-2,2]; "
            "3..50 context points, 50 held-out targets",
        ),
        "sinusoid": (
            Sinusoid(k_shot=10, n_query=50),
            Sinusoid(k_shot=10, n_query=50),
            "MAML sinusoid: A~U(0.1,5), phase~U(0,pi), x in [-5,5], noiseless; 10 context, 50 targets",
        ),
    }
    out: dict[str, object] = {}
    for fam_name in args.families:
        train_src, test_src, protocol = families[fam_name]
        episodes = fixed_episodes(test_src, args.episodes, seed=1234, tasks_per_batch=args.tasks_per_episode)  # type: ignore[arg-type]
        results: dict[str, object] = {}
        if isinstance(test_src, GPCurves):
            # the same tasks again with their hyperparameters, for the Bayes-optimal reference:
            # fixed_episodes draws every task on its own from one generator, then stacks them
            gen = torch.Generator().manual_seed(1234)
            singles = [test_src.sample_with_params(1, gen) for _ in range(args.episodes)]
            oracle: dict[int, GPCurveParams] = {}
            start = 0
            for e in episodes:
                chunk = singles[start : start + e.n_tasks]
                assert torch.equal(torch.cat([b.query_y for b, _ in chunk]), e.query_y)
                oracle[id(e)] = GPCurveParams(
                    torch.cat([p.length_scale for _, p in chunk]),
                    torch.cat([p.output_scale for _, p in chunk]),
                    test_src.noise_std,
                )
                start += e.n_tasks
            results["gp_oracle"] = {"test": _eval_regression(_oracle_predict(test_src, oracle), episodes)}
        for name in args.models:
            learner = _make_regression(name, args.hidden, args.seed)
            train = _train(learner, train_src.sample, args.steps, args.meta_batch_size, args.lr, args.seed)  # type: ignore[attr-defined]
            learner.eval()
            results[name] = {
                "train": train,
                "n_parameters": sum(p.numel() for p in learner.parameters()),
                "test": _eval_regression(_learner_predict(learner), episodes),
            }
        out[fam_name] = {
            "protocol": protocol,
            "n_eval_tasks": sum(e.n_tasks for e in episodes),
            "results": results,
        }
    return out


# ---------------------------------------------------------------------------------- omniglot
def _eval_classification(learner: MetaLearner, episodes: Sequence[TaskBatch]) -> dict[str, object]:
    learner.eval()
    acc: dict[str, list[torch.Tensor]] = {"accuracy": [], "nll": [], "ece": []}
    pooled_p, pooled_y = [], []
    with torch.no_grad():
        for b in episodes:
            p = learner(b)
            acc["accuracy"].append(accuracy(p, b.query_y))
            acc["nll"].append(categorical_nll(p, b.query_y))
            acc["ece"].append(ece(p, b.query_y))
            pooled_p.append(p.probs.reshape(-1, p.n_classes))
            pooled_y.append(b.query_y.reshape(-1))
    out: dict[str, object] = {k: _summ(v) for k, v in acc.items()}
    # per-task ECE on 75 points is dominated by binning noise; the pooled ECE is the usual figure
    out["ece_pooled"] = float(ece(torch.cat(pooled_p), torch.cat(pooled_y)))
    return out


def omniglot_bench(args: argparse.Namespace) -> dict[str, object]:
    from bayesmeta.inference.protonet import ProtoNet  # noqa: PLC0415
    from bayesmeta.models import Conv4  # noqa: PLC0415
    from bayesmeta.tasks import FewShotSampler, omniglot  # noqa: PLC0415

    train_data, test_data = omniglot("train", rotations=False), omniglot("test", rotations=False)
    out: dict[str, object] = {}
    for k_shot in args.omniglot_shots:
        train_s = FewShotSampler(train_data, n_way=5, k_shot=k_shot, n_query=15, augment_rotations=True)
        test_s = FewShotSampler(test_data, n_way=5, k_shot=k_shot, n_query=15, augment_rotations=True)
        episodes = fixed_episodes(test_s, args.omniglot_episodes, seed=1234, tasks_per_batch=4)
        results: dict[str, object] = {}
        for name in ("versa", "protonet"):
            torch.manual_seed(args.seed)
            net = Conv4(hidden=64)
            learner: MetaLearner = ProtoNet(net) if name == "protonet" else VERSA(net, n_samples=10)
            train = _train(learner, train_s.sample, args.omniglot_steps, 4, 1e-3, args.seed)
            results[name] = {"train": train, "test": _eval_classification(learner, episodes)}
        out[f"5way_{k_shot}shot"] = {"n_eval_tasks": sum(e.n_tasks for e in episodes), "results": results}
    return {
        "protocol": "Omniglot (Vinyals split, rotations as classes) 5-way, 15 query/class, Conv4-64 "
        "batch norm without running statistics, meta-batch 4, Adam 1e-3",
        "steps": args.omniglot_steps,
        **out,
    }


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--families", nargs="*", default=["gp_curves", "sinusoid"], help="none: skip regression")
    ap.add_argument("--models", nargs="+", default=["cnp", "np", "anp", "versa"])
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--meta-batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--episodes", type=int, default=200, help="evaluation tasks per family")
    ap.add_argument("--tasks-per-episode", type=int, default=20)
    ap.add_argument("--omniglot", action="store_true")
    ap.add_argument("--omniglot-shots", nargs="+", type=int, default=[1, 5])
    ap.add_argument("--omniglot-steps", type=int, default=2000)
    ap.add_argument("--omniglot-episodes", type=int, default=200, help="evaluation tasks per setting")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (small models: 1 is fastest)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="tiny run to check the script")
    args = ap.parse_args(argv)
    if args.smoke:
        args.steps, args.hidden, args.episodes, args.tasks_per_episode = 5, 16, 6, 4
        args.omniglot_steps, args.omniglot_episodes = 2, 4
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    out: dict[str, object] = {
        "benchmark": "bench_amortized",
        "date": datetime.date.today().isoformat(),
        "machine": {
            "threads": args.threads,
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "command": " ".join([os.path.relpath(sys.executable), *sys.argv]),
        "settings": {
            "steps": args.steps, "hidden": args.hidden, "meta_batch_size": args.meta_batch_size,
            "lr": args.lr, "seed": args.seed,
        },
        "regression": regression(args),
    }
    if args.omniglot:
        out["omniglot"] = omniglot_bench(args)
    out["total_seconds"] = time.perf_counter() - t0
    json.dump(out, sys.stdout, indent=2, default=lambda v: v if not isinstance(v, float) or math.isfinite(v) else str(v))
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
