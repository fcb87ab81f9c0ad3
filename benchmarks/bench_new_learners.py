"""Reptile, iMAML, ALPaCA and Matching networks against MAML / ProtoNet on the same episodes (issue 16).

Parts (``--part``), each a key of the printed JSON object:

- ``regression``: sinusoid 10-shot (10 queries), 40-40 ReLU MLP, meta-batch 10, Adam 1e-3, the
  same number of meta-steps for every method (``--steps``, a short budget). MAML (1 inner step,
  0.01), Reptile (5 steps, 0.02), iMAML (5 steps, 0.02, reg 1, 5 CG iterations) and ALPaCA (the
  same MLP as features, exact Bayesian head). Every method is scored on the very same fixed
  episodes with :func:`bayesmeta.evaluation.evaluate`: MSE, NLL, PIT calibration error and
  90%-interval coverage (mean and 95% bootstrap half-width over tasks).
- ``classification``: Omniglot 5-way 1-shot (15 queries), Conv4 with 32 filters and TaskNorm,
  meta-batch 4, ``--steps`` meta-steps: ProtoNet and Matching networks (learned scale), scored
  on the same fixed test episodes (accuracy, NLL, ECE).
- ``time``: seconds per meta-step (forward + backward) relative to the peer, interleaved
  (A, B, A, B, ...) at one thread, median of per-round ratios: Reptile, iMAML and MAML with
  K = 5 vs MAML K = 5 (second order), ALPaCA vs MAML K = 1 on sinusoids; Matching vs ProtoNet
  on Omniglot-shaped episodes.
- ``memory``: peak resident-memory growth (``ru_maxrss`` delta) of one meta-step in a fresh
  subprocess after a warm-up step, iMAML vs second-order MAML for K = 1, 5, 10 inner steps
  (Omniglot-shaped 5-way 1-shot, Conv4-64, 8 tasks; as ``bench_maml_memory.py``).

Usage::

    flock /tmp/bayesmeta-cpu.lock .venv/bin/python benchmarks/bench_new_learners.py --part regression
    .venv/bin/python benchmarks/bench_new_learners.py --smoke      # seconds, every part

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from bayesmeta.evaluation import evaluate
from bayesmeta.inference import IMAML, MAML, ALPaCA, MatchingNet, MetaLearner, ProtoNet, Reptile
from bayesmeta.models import MLP, Conv4
from bayesmeta.tasks import FewShotSampler, Sinusoid, TaskBatch, fixed_episodes, omniglot
from bayesmeta.training import MetaTrainer


def _regression_learner(name: str) -> MetaLearner:
    mlp = lambda: MLP(1, 1, hidden=(40, 40))  # noqa: E731
    if name == "maml":
        return MAML(mlp(), inner_lr=0.01, inner_steps=1, task_kind="regression")
    if name == "maml5":
        return MAML(mlp(), inner_lr=0.02, inner_steps=5, task_kind="regression")
    if name == "reptile":
        return Reptile(mlp(), inner_lr=0.02, inner_steps=5, task_kind="regression")
    if name == "imaml":
        return IMAML(mlp(), inner_lr=0.02, inner_steps=5, reg=1.0, cg_steps=5, task_kind="regression")
    if name == "alpaca":
        return ALPaCA(MLP(1, None, hidden=(40, 40)))
    raise ValueError(name)


def _classification_learner(name: str, hidden: int) -> MetaLearner:
    if name == "protonet":
        return ProtoNet(Conv4(hidden=hidden))
    if name == "matching":
        return MatchingNet(Conv4(hidden=hidden), learn_scale=True)
    raise ValueError(name)


def _summary(res: Any, metrics: tuple[str, ...]) -> dict[str, Any]:
    return {m: {"mean": round(res.summary[m].mean, 4), "ci95": round(res.summary[m].half_width, 4)} for m in metrics}


def _train(learner: MetaLearner, source: Any, steps: int, batch: int) -> float:
    t0 = time.perf_counter()
    MetaTrainer(learner, source, steps=steps, meta_batch_size=batch, lr=1e-3, seed=0, progress=False, val_episodes=None).fit()
    return round(time.perf_counter() - t0, 1)


def regression(steps: int, n_tasks: int) -> dict[str, Any]:
    source = Sinusoid(k_shot=10, n_query=10)
    episodes = fixed_episodes(source, n_tasks, seed=1234, tasks_per_batch=25)
    rows: dict[str, Any] = {}
    for name in ("maml", "reptile", "imaml", "alpaca"):
        torch.manual_seed(0)
        learner = _regression_learner(name)
        secs = _train(learner, source, steps, 10)
        res = evaluate(learner, episodes, progress=False, keep_predictions=False, seed=0)
        rows[name] = {**_summary(res, ("mse", "nll", "pit_error", "coverage_90")), "train_seconds": secs}
    return {"setup": {"task": "sinusoid 10-shot, 10 queries", "steps": steps, "meta_batch": 10, "test_tasks": n_tasks},
            "rows": rows}


def _omniglot(split: str) -> FewShotSampler:
    return FewShotSampler(omniglot(split, rotations=False), n_way=5, k_shot=1, n_query=15, augment_rotations=split == "train")


def classification(steps: int, n_tasks: int, hidden: int) -> dict[str, Any]:
    train, test = _omniglot("train"), _omniglot("test")
    episodes = fixed_episodes(test, n_tasks, seed=1234, tasks_per_batch=20)
    rows: dict[str, Any] = {}
    for name in ("protonet", "matching"):
        torch.manual_seed(0)
        learner = _classification_learner(name, hidden)
        secs = _train(learner, train, steps, 4)
        res = evaluate(learner, episodes, progress=False, keep_predictions=False, seed=0)
        rows[name] = {**_summary(res, ("accuracy", "nll", "ece")), "train_seconds": secs}
    return {"setup": {"task": "omniglot 5-way 1-shot, 15 queries", "steps": steps, "meta_batch": 4, "conv4_hidden": hidden,
                      "test_tasks": n_tasks}, "rows": rows}


def _step(learner: MetaLearner, batch: TaskBatch) -> float:
    t0 = time.perf_counter()
    learner.meta_loss(batch).loss.backward()
    return time.perf_counter() - t0


def _ratio(a: MetaLearner, b: MetaLearner, batch: TaskBatch, rounds: int) -> dict[str, float]:
    """Median over rounds of time(a) / time(b), interleaved a, b, a, b (one warm-up each)."""
    _step(a, batch), _step(b, batch)
    ta, tb = [], []
    for _ in range(rounds):
        ta.append(_step(a, batch))
        tb.append(_step(b, batch))
    return {"ratio_median": round(statistics.median(x / y for x, y in zip(ta, tb)), 3),
            "seconds_a": round(statistics.median(ta), 5), "seconds_b": round(statistics.median(tb), 5)}


def timing(rounds: int) -> dict[str, Any]:
    sine = Sinusoid(k_shot=10, n_query=10).sample(25, torch.Generator().manual_seed(0))
    out: dict[str, Any] = {}
    torch.manual_seed(0)
    maml5 = _regression_learner("maml5")
    for name in ("reptile", "imaml"):
        torch.manual_seed(0)
        out[f"{name}_vs_maml_K5"] = _ratio(_regression_learner(name), maml5, sine, rounds)
    torch.manual_seed(0)
    out["fomaml_vs_maml_K5"] = _ratio(MAML(MLP(1, 1, hidden=(40, 40)), inner_lr=0.02, inner_steps=5, first_order=True,
                                           task_kind="regression"), maml5, sine, rounds)
    out["alpaca_vs_maml_K1"] = _ratio(_regression_learner("alpaca"), _regression_learner("maml"), sine, rounds)
    cls = _omniglot("test").sample(4, torch.Generator().manual_seed(0))
    out["matching_vs_protonet"] = _ratio(_classification_learner("matching", 32), _classification_learner("protonet", 32),
                                         cls, rounds)
    return out


def _memory_one(name: str, steps: int) -> dict[str, float]:
    torch.manual_seed(0)
    t, n_way, q = 8, 5, 5
    g = torch.Generator().manual_seed(0)
    batch = TaskBatch(
        torch.rand(t, n_way, 1, 28, 28, generator=g), torch.arange(n_way).repeat(t, 1),
        torch.rand(t, n_way * q, 1, 28, 28, generator=g), torch.arange(n_way).repeat_interleave(q).repeat(t, 1),
        n_way=n_way,
    )
    make: Callable[[], MetaLearner]
    if name == "imaml":
        make = lambda: IMAML(Conv4(out_features=n_way), inner_lr=0.1, inner_steps=steps, reg=1.0, cg_steps=5,  # noqa: E731
                             task_kind="classification")
    else:
        make = lambda: MAML(Conv4(out_features=n_way), inner_lr=0.4, inner_steps=steps, task_kind="classification")  # noqa: E731
    learner = make()
    warm = MAML(Conv4(out_features=n_way), inner_steps=0, task_kind="classification")
    warm.meta_loss(batch).loss.backward()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    learner.meta_loss(batch).loss.backward()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_rss_delta_mb": round((after - before) / 1024, 1)}


def memory() -> list[dict[str, Any]]:
    rows = []
    for steps in (1, 5, 10):
        for name in ("maml", "imaml"):
            out = subprocess.run([sys.executable, __file__, "--memory-one", name, str(steps)],
                                 capture_output=True, text=True, check=True)
            rows.append({"learner": name, "inner_steps": steps, **json.loads(out.stdout.strip().splitlines()[-1])})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("regression", "classification", "time", "memory", "all"), default="all")
    p.add_argument("--steps", type=int, default=None, help="meta-steps per method (default 500 regression, 300 classification)")
    p.add_argument("--tasks", type=int, default=200, help="test tasks")
    p.add_argument("--rounds", type=int, default=15, help="timing rounds")
    p.add_argument("--smoke", action="store_true", help="tiny budget (seconds), for CI")
    p.add_argument("--memory-one", nargs=2, metavar=("LEARNER", "K"), help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.memory_one:
        print(json.dumps(_memory_one(args.memory_one[0], int(args.memory_one[1]))))
        return
    if args.smoke:
        args.steps, args.tasks, args.rounds = 2, 4, 2
    parts = ("regression", "classification", "time", "memory") if args.part == "all" else (args.part,)
    out: dict[str, Any] = {
        "benchmark": "new_learners_issue16",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": __import__("os").cpu_count(), "torch": torch.__version__, "threads": 1,
                    "python": platform.python_version()},
        "command": " ".join(sys.argv),
    }
    for part in parts:
        t0 = time.perf_counter()
        if part == "regression":
            out[part] = regression(args.steps or 500, args.tasks)
        elif part == "classification":
            out[part] = classification(args.steps or 300, args.tasks, 8 if args.smoke else 32)
        elif part == "time":
            out[part] = timing(args.rounds)
        elif part == "memory":
            out[part] = memory() if not args.smoke else [_memory_one("imaml", 1)]
        out[part + "_seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
