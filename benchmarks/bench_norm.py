"""Normalization options of Conv4 on Omniglot, on the same episodes and the same step budget.

    .venv/bin/python benchmarks/bench_norm.py accuracy --method protonet --steps 400
    .venv/bin/python benchmarks/bench_norm.py accuracy --method maml --steps 200
    .venv/bin/python benchmarks/bench_norm.py speed --repeats 30
    .venv/bin/python benchmarks/bench_norm.py evaluate --episodes 600

``accuracy``: for every ``norm`` (task, group, instance, layer, none, and the transductive batch
opt-in), meta-train the learner from the same seed for the same number of steps on Omniglot
5-way 1-shot (Vinyals split, rotations as classes; ProtoNet: 15 queries per class, meta-batch 4;
MAML: 5 queries per class, 1 inner step of 0.4 (3 at test), meta-batch 8, Adam 1e-3), then
evaluate on the same fixed test episodes (seed 1234, 15 queries per class): 5-way 1-shot, and
20-way 1-shot for ProtoNet. Reports accuracy and ECE with 95% CIs over tasks.

``speed``: forward + backward of Conv4-64 on one 5-way 1-shot task with 75 queries: TaskNorm
(``norm="task"``, support statistics + instance statistics) vs ``nn.BatchNorm2d`` swapped into
the same network, timed interleaved (A, B, A, B) at one thread; the median ratio of pairs.

``evaluate``: wall time and peak memory (ru_maxrss of a fresh child process) of ``evaluate`` on
the 20-way 1-shot ProtoNet config's test episodes (600 tasks, 15 queries per class), with the
whole 20-task episode in one call (what 0.1 did) and in calls of 4 tasks (the default now).

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch

NORMS = ("task", "group", "instance", "layer", "none", "batch")


def _accuracy(args: argparse.Namespace) -> dict[str, object]:
    from bayesmeta.evaluation import evaluate
    from bayesmeta.inference import MAML, ProtoNet
    from bayesmeta.models import Conv4
    from bayesmeta.tasks import FewShotSampler, fixed_episodes, omniglot
    from bayesmeta.training import MetaTrainer

    train_set, test_set = omniglot("train"), omniglot("test")
    ways = (5, 20) if args.method == "protonet" else (5,)
    episodes = {
        w: fixed_episodes(FewShotSampler(test_set, n_way=w, k_shot=1, n_query=15), n_episodes=args.episodes, seed=1234, tasks_per_batch=10)
        for w in ways
    }
    out: dict[str, object] = {}
    for norm in args.norms.split(","):
        torch.manual_seed(0)
        if args.method == "protonet":
            learner = ProtoNet(Conv4(hidden=64, norm=norm))
            source = FewShotSampler(train_set, n_way=5, k_shot=1, n_query=15)
            mbs = 4
        else:
            learner = MAML(Conv4(out_features=5, hidden=64, norm=norm), inner_lr=0.4, inner_steps=1,
                           test_inner_steps=3, task_kind="classification")
            source = FewShotSampler(train_set, n_way=5, k_shot=1, n_query=5)
            mbs = 8
        t0 = time.perf_counter()
        MetaTrainer(learner, source, steps=args.steps, meta_batch_size=mbs, lr=1e-3, seed=0, progress=False).fit()
        train_s = time.perf_counter() - t0
        rec: dict[str, object] = {"train_s": round(train_s, 1), "steps": args.steps}
        for w, eps in episodes.items():
            r = evaluate(learner, eps, progress=False, seed=1234)
            rec[f"{w}way_1shot"] = {k: r.summary[k].to_dict() for k in ("accuracy", "ece", "nll")}
        out[norm] = rec
        print(json.dumps({norm: rec}), file=sys.stderr, flush=True)
    return out


def _speed(args: argparse.Namespace) -> dict[str, object]:
    from bayesmeta.models import Conv4
    from bayesmeta.models.norm import TaskNorm2d

    torch.manual_seed(0)
    task = Conv4(hidden=64, norm="task")
    bn = Conv4(hidden=64, norm="group")
    for i, layer in enumerate(bn.body):  # the same network with torch's batch norm
        if isinstance(layer, torch.nn.GroupNorm):
            bn.body[i] = torch.nn.BatchNorm2d(64, track_running_stats=False)
    x = torch.rand(1, 80, 1, 28, 28)
    ctx = torch.zeros(1, 80, dtype=torch.bool)
    ctx[:, :5] = True

    def run_task() -> None:
        task(x, ctx).square().mean().backward()

    def run_bn() -> None:
        bn(x[0]).square().mean().backward()

    for f in (run_task, run_bn):
        f()
    ratios, ta, tb = [], [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        run_task()
        t1 = time.perf_counter()
        run_bn()
        t2 = time.perf_counter()
        ta.append(t1 - t0)
        tb.append(t2 - t1)
        ratios.append((t1 - t0) / (t2 - t1))
    assert any(isinstance(m, TaskNorm2d) for m in task.modules())
    return {
        "taskn_ms": 1e3 * statistics.median(ta),
        "batchnorm2d_ms": 1e3 * statistics.median(tb),
        "median_ratio_task_over_batchnorm2d": statistics.median(ratios),
        "repeats": args.repeats,
    }


_EVAL_CHILD = """
import json, resource, sys, time, torch
torch.set_num_threads(1)
from bayesmeta.evaluation import evaluate
from bayesmeta.inference import ProtoNet
from bayesmeta.models import Conv4
from bayesmeta.tasks import FewShotSampler, fixed_episodes, omniglot
n, chunk = int(sys.argv[1]), (None if sys.argv[2] == "none" else int(sys.argv[2]))
torch.manual_seed(0)
learner = ProtoNet(Conv4(hidden=64))
eps = fixed_episodes(FewShotSampler(omniglot("test"), n_way=20, k_shot=1, n_query=15), n_episodes=n, seed=1234, tasks_per_batch=20)
t0 = time.perf_counter()
import inspect
kw = {"max_tasks_per_call": chunk} if "max_tasks_per_call" in inspect.signature(evaluate).parameters else {}
r = evaluate(learner, eps, progress=False, keep_predictions=True, **kw)
print(json.dumps({"wall_s": time.perf_counter() - t0, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "tasks": r.n_tasks}))
"""


def _evaluate(args: argparse.Namespace) -> dict[str, object]:
    import os

    out = {}
    runs = [("tasks_per_call_20", "none", None), ("tasks_per_call_4", "4", None)]
    if args.old_tree:  # the same evaluation with bayesmeta 0.1's code (one call per episode)
        runs.insert(0, ("bayesmeta_0.1", "none", args.old_tree))
    for name, chunk, tree in runs:
        env = dict(os.environ)
        if tree:
            env["PYTHONPATH"] = tree
        res = subprocess.run([sys.executable, "-c", _EVAL_CHILD, str(args.episodes), chunk], capture_output=True,
                             text=True, check=True, env=env, cwd=tree)
        out[name] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("part", choices=("accuracy", "speed", "evaluate"))
    ap.add_argument("--method", choices=("protonet", "maml"), default="protonet")
    ap.add_argument("--norms", default=",".join(NORMS))
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--episodes", type=int, default=200, help="test tasks per way count (evaluate: 600)")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--old-tree", default=None, help="evaluate: a checkout of bayesmeta 0.1 to measure 'before'")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    result = {"accuracy": _accuracy, "speed": _speed, "evaluate": _evaluate}[args.part](args)
    print(json.dumps({
        "benchmark": f"norm_{args.part}" + (f"_{args.method}" if args.part == "accuracy" else ""),
        "args": vars(args),
        "result": result,
        "wall_s": round(time.time() - t0, 1),
        "machine": {"cores": 2, "threads": 1, "torch": torch.__version__, "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "self_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }, indent=2))


if __name__ == "__main__":
    main()
