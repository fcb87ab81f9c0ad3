"""BMAML and PLATIPUS against MAML on sinusoid regression, and what the particles cost.

Three parts (``--part``), each a key of the printed JSON object:

- ``accuracy``: sinusoid 5- and 10-shot (10 queries), 40-40 ReLU MLP, meta-batch 25, Adam 1e-3,
  the same number of meta-steps for every method (``--steps``), one inner step with step size
  0.01 for every method (the MAML paper's sinusoid setting). Methods: MAML; BMAML with 5
  particles and the chaser loss, from a learned particle set (``bmaml``, the default) or from
  the learned prior with its prior term (``bmaml_prior``); PLATIPUS from scratch; PLATIPUS initialised from the
  trained MAML (``PLATIPUS.from_maml``, trained ``--steps`` more). All are scored on the very same
  fixed episodes (``fixed_episodes(seed=1234)``) with :func:`bayesmeta.evaluation.evaluate`:
  MSE of the predictive mean, NLL, PIT calibration error (W1 distance of the PIT values to
  uniform) and 90%-interval coverage, mean and 95% bootstrap half-width over tasks.
- ``cost``: wall time of one BMAML meta-step (forward + backward, T = 25, 10-shot) with M = 1,
  2, 5, 10 particles relative to one MAML meta-step, with 1 and 2 torch threads. MAML and BMAML
  steps are interleaved in rounds and the ratio is the median over rounds of per-round ratios,
  so that load from other processes on the machine hits both alike.
- ``linear_gaussian``: Bayesian linear regression (``LinearGaussian``, noise 0.3, x in [-2, 2],
  linear model ``y = w x + b``), where the exact posterior predictive is known. MAML, BMAML
  (chaser and NLL), PLATIPUS and PLATIPUS from MAML, inner step 0.15 x 5 steps, trained on
  support sets of 1..10 points (masks); scored on 50 fixed tasks at 1, 2, 5 and 10 support
  points: mean predictive variance (and the exact one), KL(exact || learner) and W2 per query
  point (:func:`bayesmeta.diagnostics.reference.score_against_reference`). ``--lg-noise fixed``
  (default) gives every learner the true noise std 0.3, so that only the posterior over the
  weights differs; ``learned`` learns it as usual.
- ``memory``: peak resident-memory growth of one meta-step (``ru_maxrss`` delta, each
  configuration in a fresh subprocess after a warm-up step on 2 tasks, as in
  ``bench_maml_memory.py``), MAML and BMAML with M = 1, 2, 5, 10, meta-batch 500 (large enough
  for the step's memory to stand out from the allocator's noise).

Usage::

    .venv/bin/python benchmarks/bench_bayesian_maml.py                 # everything
    .venv/bin/python benchmarks/bench_bayesian_maml.py --part cost
    .venv/bin/python benchmarks/bench_bayesian_maml.py --smoke         # seconds, for CI

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

import torch

from bayesmeta.evaluation import evaluate
from bayesmeta.inference import MAML
from bayesmeta.inference.bmaml import BMAML
from bayesmeta.inference.platipus import PLATIPUS
from bayesmeta.models import MLP
from bayesmeta.tasks import Sinusoid, fixed_episodes
from bayesmeta.training import MetaTrainer

METRICS = ("mse", "nll", "pit_error", "coverage_90")
INNER_LR = 0.01
MEMORY_TASKS = 500


def _model() -> MLP:
    return MLP(1, 1, hidden=(40, 40))


def _learners(name: str, maml: MAML | None = None) -> torch.nn.Module:
    if name == "maml":
        return MAML(_model(), inner_lr=INNER_LR, inner_steps=1, task_kind="regression")
    if name == "bmaml":
        return BMAML(_model(), n_particles=5, inner_lr=INNER_LR, inner_steps=1, leader_steps=1, objective="chaser",
                     prior=None, task_kind="regression")
    if name == "bmaml_prior":
        return BMAML(_model(), n_particles=5, inner_lr=INNER_LR, inner_steps=1, leader_steps=1, objective="chaser",
                     prior="learned", task_kind="regression")
    if name == "platipus":
        return PLATIPUS(_model(), inner_lr=INNER_LR, inner_steps=1, n_samples=5, task_kind="regression")
    if name == "platipus_from_maml":
        assert maml is not None
        return PLATIPUS.from_maml(maml, n_samples=5)
    raise ValueError(name)


def _train(learner: torch.nn.Module, source: Sinusoid, steps: int, seed: int) -> dict[str, float]:
    t0 = time.perf_counter()
    trainer = MetaTrainer(learner, source, steps=steps, meta_batch_size=25, lr=1e-3, seed=seed, progress=False,
                          val_episodes=None)
    res = trainer.fit()
    return {"train_steps": res.steps, "train_seconds": round(time.perf_counter() - t0, 1),
            "final_loss": res.history[-1]["loss"] if res.history else float("nan")}


def accuracy(steps: int, n_tasks: int, threads: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    out: dict[str, Any] = {}
    for k in (5, 10):
        source = Sinusoid(k_shot=k, n_query=10)
        episodes = fixed_episodes(source, n_tasks, seed=1234, tasks_per_batch=50)
        rows: dict[str, Any] = {}
        trained: dict[str, torch.nn.Module] = {}
        for name in ("maml", "bmaml", "bmaml_prior", "platipus", "platipus_from_maml"):
            torch.manual_seed(0)
            learner = _learners(name, trained.get("maml"))  # type: ignore[arg-type]
            info = _train(learner, source, steps, seed=0)
            trained[name] = learner
            res = evaluate(learner, episodes, progress=False, keep_predictions=False, seed=0)
            rows[name] = {
                **{m: {"mean": round(res.summary[m].mean, 4), "ci95": round(res.summary[m].half_width, 4)} for m in METRICS},
                **info,
            }
        out[f"{k}-shot"] = rows
    return out


def linear_gaussian(steps: int, noise: str = "learned") -> dict[str, Any]:
    from bayesmeta.diagnostics.reference import exact_reference, score_against_reference
    from bayesmeta.tasks import LinearGaussian, TaskBatch

    torch.set_num_threads(1)
    fam = LinearGaussian(k_shot=10, n_query=10, noise_std=0.3, x_range=(-2.0, 2.0), dtype=torch.float64)
    ks = (1, 2, 5, 10)

    def train(learner: torch.nn.Module, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        opt = torch.optim.Adam(learner.parameters(), lr=0.01)
        for _ in range(steps):
            b = fam.sample(25, g)
            k = torch.randint(1, 11, (25, 1), generator=g)
            b = TaskBatch(b.support_x, b.support_y, b.query_x, b.query_y, support_mask=torch.arange(10)[None] < k)
            opt.zero_grad()
            learner.meta_loss(b).loss.backward()
            opt.step()

    test = fam.sample(50, torch.Generator().manual_seed(123))

    def with_k(k: int) -> TaskBatch:
        mask = torch.zeros(50, 10, dtype=torch.bool)
        mask[:, :k] = True
        return TaskBatch(test.support_x, test.support_y, test.query_x, test.query_y, support_mask=mask)

    def scores(learner: torch.nn.Module) -> dict[str, Any]:
        rows: dict[str, Any] = {}
        for k in ks:
            bk = with_k(k)
            with torch.no_grad():
                pred = learner.predict(learner.adapt(bk.support), bk.query_x)
            sc = score_against_reference(pred, exact_reference(fam, bk, bk.query_x))
            rows[str(k)] = {"var": round(float(pred.variance.mean()), 4), "kl": round(float(sc["kl"].mean()), 4),
                            "w2": round(float(sc["w2"].mean()), 4)}
        rows["mean_kl"] = round(sum(rows[str(k)]["kl"] for k in ks) / len(ks), 4)
        rows["mean_w2"] = round(sum(rows[str(k)]["w2"] for k in ks) / len(ks), 4)
        return rows

    def model() -> MLP:
        return MLP(1, 1, hidden=()).double()

    # "fixed": every learner is given the true noise std, which isolates the posterior over w
    nz: float | str = 0.3 if noise == "fixed" else "learned"

    out: dict[str, Any] = {"exact_var": {str(k): round(float(exact_reference(fam, with_k(k), test.query_x).variance.mean()), 4)
                                         for k in ks}}
    torch.manual_seed(0)
    maml = MAML(model(), inner_lr=0.15, inner_steps=5, task_kind="regression", noise=nz)
    train(maml, 0)
    out["maml"] = scores(maml)
    for name in ("bmaml", "bmaml_nll", "platipus", "platipus_from_maml"):
        torch.manual_seed(0)
        if name.startswith("bmaml"):
            learner: torch.nn.Module = BMAML(model(), n_particles=10, inner_lr=0.15, inner_steps=5, leader_steps=5,
                                             objective="nll" if name == "bmaml_nll" else "chaser", prior="learned",
                                             prior_init_std=1.0,
                                             task_kind="regression", noise=nz)
        elif name == "platipus":
            learner = PLATIPUS(model(), inner_lr=0.15, inner_steps=5, n_samples=10, kl_weight=0.02, prior_init_std=1.0,
                               task_kind="regression", noise=nz)
        else:
            learner = PLATIPUS.from_maml(maml, n_samples=10, kl_weight=0.02, prior_init_std=1.0)
        train(learner, 1 if name == "platipus_from_maml" else 0)
        out[name] = scores(learner)
    return out


def _step_time(learner: torch.nn.Module, batch: Any, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        learner.meta_loss(batch).loss.backward()
    return (time.perf_counter() - t0) / n


def cost(rounds: int, n: int, threads_list: tuple[int, ...] = (1, 2), ms: tuple[int, ...] = (1, 2, 5, 10)) -> list[dict[str, Any]]:
    batch = Sinusoid(k_shot=10, n_query=10).sample(25, torch.Generator().manual_seed(0))
    rows = []
    for threads in threads_list:
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        maml = MAML(_model(), inner_lr=INNER_LR, inner_steps=1, task_kind="regression")
        for m in ms:
            for objective in ("chaser", "nll"):
                bm = BMAML(_model(), n_particles=m, inner_lr=INNER_LR, inner_steps=1, objective=objective,
                           task_kind="regression")
                for learner in (maml, bm):  # warm-up: first calls build vmap/grad machinery
                    _step_time(learner, batch, 3)
                ratios, t_maml, t_bm = [], [], []
                for _ in range(rounds):
                    a = _step_time(maml, batch, n)
                    b = _step_time(bm, batch, n)
                    ratios.append(b / a)
                    t_maml.append(a)
                    t_bm.append(b)
                rows.append({
                    "threads": threads, "n_particles": m, "objective": objective,
                    "ratio_to_maml": round(statistics.median(ratios), 2),
                    "ratio_over_m": round(statistics.median(ratios) / m, 2),
                    "maml_ms": round(1e3 * statistics.median(t_maml), 2),
                    "bmaml_ms": round(1e3 * statistics.median(t_bm), 2),
                })
    return rows


def _memory_one(kind: str, m: int) -> dict[str, float]:
    torch.set_num_threads(1)
    batch = Sinusoid(k_shot=10, n_query=10).sample(MEMORY_TASKS, torch.Generator().manual_seed(0))
    tiny = Sinusoid(k_shot=10, n_query=10).sample(2, torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    if kind == "maml":
        learner: torch.nn.Module = MAML(_model(), inner_lr=INNER_LR, inner_steps=1, task_kind="regression")
    else:
        learner = BMAML(_model(), n_particles=m, inner_lr=INNER_LR, inner_steps=1, objective=kind,
                        task_kind="regression")
    # warm-up on 2 tasks: imports, vmap/grad set-up and the parameters are in the baseline, while
    # the large activations of the measured step (MEMORY_TASKS tasks) are fresh mmap'd memory
    learner.meta_loss(tiny).loss.backward()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    learner.meta_loss(batch).loss.backward()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_rss_delta_mb": round((after - before) / 1024, 2)}


def memory() -> list[dict[str, Any]]:
    rows = []
    configs = [("maml", 1)] + [(obj, m) for obj in ("chaser", "nll") for m in (1, 2, 5, 10)]
    for kind, m in configs:
        proc = subprocess.run([sys.executable, __file__, "--memory-one", kind, str(m)], capture_output=True, text=True,
                              check=True)
        rows.append({"learner": "maml" if kind == "maml" else f"bmaml-{kind}", "n_particles": m,
                     **json.loads(proc.stdout.strip().splitlines()[-1])})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("all", "accuracy", "linear_gaussian", "cost", "memory"), default="all")
    ap.add_argument("--lg-steps", type=int, default=150, help="meta-steps per method (linear_gaussian)")
    ap.add_argument("--lg-noise", choices=("fixed", "learned"), default="fixed",
                    help="linear_gaussian: give every learner the true noise std, or learn it")
    ap.add_argument("--steps", type=int, default=4000, help="meta-steps per method (accuracy)")
    ap.add_argument("--tasks", type=int, default=600, help="evaluation tasks (accuracy)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for training (accuracy)")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds (cost)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: runs in seconds")
    ap.add_argument("--memory-one", nargs=2, metavar=("KIND", "M"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_one:
        print(json.dumps(_memory_one(args.memory_one[0], int(args.memory_one[1]))))
        return
    steps, n_tasks, rounds, n = args.steps, args.tasks, args.rounds, 10
    if args.smoke:
        steps, n_tasks, rounds, n = 3, 10, 1, 1
    result: dict[str, Any] = {
        "benchmark": "bayesian_maml",
        "date": datetime.date.today().isoformat(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "python": platform.python_version()},
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "setup": {"family": "sinusoid", "n_query": 10, "backbone": "mlp-40-40", "meta_batch_size": 25,
                  "inner_lr": INNER_LR, "inner_steps": 1, "steps": steps, "eval_tasks": n_tasks,
                  "train_threads": args.threads},
    }
    if args.part in ("all", "accuracy"):
        result["accuracy"] = accuracy(steps, n_tasks, args.threads)
    if args.part in ("all", "linear_gaussian"):
        lg_steps = 3 if args.smoke else args.lg_steps
        result["linear_gaussian"] = {"steps": lg_steps, "noise": args.lg_noise,
                                     **linear_gaussian(lg_steps, args.lg_noise)}
    if args.part in ("all", "cost"):
        result["cost"] = cost(rounds, n, (1,), (1, 2)) if args.smoke else cost(rounds, n)
    if args.part in ("all", "memory") and not args.smoke:
        result["memory"] = memory()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
