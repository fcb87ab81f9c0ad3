"""Per-learner overhead over the backbone (issue 14, item 2), timed interleaved at one thread.

- ``maml_adapt``: MAML adaptation, 5 inner steps on one Omniglot-shaped 5-way 1-shot task
  (Conv4-64, TaskNorm), under ``torch.no_grad`` as in evaluation, against a plain autograd loop
  doing the same 5 steps (``functional_call`` + ``torch.autograd.grad`` on the same task).
  Target: <= 1.1x.
- ``bmaml_m1``: BMAML meta-step with one particle (``prior=None``, ``objective="nll"``, fixed
  noise: the configuration that reduces to MAML) against the MAML meta-step, sinusoid 25 tasks x
  10+10, 40-40 MLP, second order. Target: <= 1.2x.
- ``amortized``: ProtoNet, VERSA and DKT ``predict(adapt(support), query)`` on 8 Omniglot-shaped
  5-way 1-shot tasks with 15 queries per class (Conv4-64 embedding, TaskNorm), under
  ``torch.no_grad``, against one forward of the same Conv4 on the same images (support and
  queries of each task in one call, normalized by the support). Target: <= 1.1x.

    .venv/bin/python benchmarks/bench_learner_overhead.py [--repeats 30] [--threads 1]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math

import torch
import torch.nn.functional as F
from _timing import interleaved, machine
from torch.func import functional_call

from bayesmeta.inference import BMAML, DKT, MAML, VERSA, ProtoNet
from bayesmeta.models import MLP, Conv4
from bayesmeta.tasks import Sinusoid, SupportSet, TaskBatch


def omniglot_like(tasks: int, n_way: int, q: int, seed: int) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    sx = torch.randn(tasks, n_way, 1, 28, 28, generator=g)
    qx = torch.randn(tasks, n_way * q, 1, 28, 28, generator=g)
    sy = torch.arange(n_way).repeat(tasks, 1)
    qy = torch.arange(n_way).repeat_interleave(q).repeat(tasks, 1)
    return TaskBatch(sx, sy, qx, qy, n_way=n_way)


def maml_adapt(repeats: int) -> dict[str, object]:
    torch.manual_seed(0)
    model = Conv4(1, 5, hidden=64)
    learner = MAML(model, inner_lr=0.4, inner_steps=5, task_kind="classification")
    batch = omniglot_like(1, 5, 1, seed=1)
    support = batch.support
    x, y = batch.support_x[0], batch.support_y[0]
    names = [n for n, _ in model.named_parameters()]

    def plain() -> dict[str, torch.Tensor]:
        p = {n: v.detach().requires_grad_(True) for n, v in model.named_parameters()}
        for _ in range(5):
            with torch.enable_grad():
                loss = F.cross_entropy(functional_call(model, p, (x,)), y)
                g = torch.autograd.grad(loss, [p[n] for n in names])
            p = {n: (p[n] - 0.4 * gi).detach().requires_grad_(True) for n, gi in zip(names, g)}
        return p

    def ours() -> object:
        return learner.adapt(support)

    with torch.no_grad():
        a = ours().params
        b = plain()
        err = max(float((a[n][0] - b[n]).abs().max()) for n in names)
        res = interleaved({"plain_autograd_loop": plain, "maml_adapt": ours}, "plain_autograd_loop", repeats)
    return {"max_abs_diff_of_adapted_params": err, "ratio": res["maml_adapt"]["ratio"], "timings": res}


def bmaml_m1(repeats: int) -> dict[str, object]:
    torch.manual_seed(0)
    model = MLP(1, 1, hidden=(40, 40))
    noise = math.sqrt(0.5)
    maml = MAML(model, inner_lr=0.01, inner_steps=1, task_kind="regression", noise=noise)
    bmaml = BMAML(model, n_particles=1, inner_lr=0.01, inner_steps=1, objective="nll", prior=None,
                  task_kind="regression", noise=noise)
    batch = Sinusoid(k_shot=10, n_query=10).sample(25, generator=torch.Generator().manual_seed(1))
    params = list(model.parameters())

    def step(learner) -> list[torch.Tensor]:
        return list(torch.autograd.grad(learner.meta_loss(batch).loss, params))

    # BMAML's M=1 NLL loss is MAML's squared error + a constant: equal meta-gradients
    ga, gb = step(maml), step(bmaml)
    err = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(gb, ga))
    res = interleaved({"maml": lambda: step(maml), "bmaml_m1": lambda: step(bmaml)}, "maml", repeats)
    return {"meta_gradient_rel_err_vs_maml": err, "ratio": res["bmaml_m1"]["ratio"], "timings": res}


def amortized(repeats: int) -> dict[str, object]:
    torch.manual_seed(0)
    batch = omniglot_like(8, 5, 15, seed=2)
    support = SupportSet(batch.support_x, batch.support_y, None, 5)
    backbone = Conv4(1, None, hidden=64)
    x = torch.cat([batch.support_x, batch.query_x], 1)
    mask = torch.cat([torch.ones(8, 5, dtype=torch.bool), torch.zeros(8, 75, dtype=torch.bool)], 1)
    learners = {
        "protonet": ProtoNet(backbone),
        "versa": VERSA(backbone, n_samples=10),
        "dkt": DKT(backbone, task_kind="classification", n_way=5),
    }

    def forward() -> torch.Tensor:
        return backbone(x, context_mask=mask)

    out: dict[str, object] = {}
    with torch.no_grad():
        for name, learner in learners.items():
            res = interleaved(
                {"backbone_forward": forward, name: lambda learner=learner: learner.predict(learner.adapt(support), batch.query_x)},
                "backbone_forward",
                repeats,
            )
            out[name] = {"ratio": res[name]["ratio"], "timings": res}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", choices=["maml_adapt", "bmaml_m1", "amortized"], default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    result: dict[str, object] = {"benchmark": "learner_overhead", "machine": machine(), "repeats": args.repeats}
    for name, fn in (("maml_adapt", maml_adapt), ("bmaml_m1", bmaml_m1), ("amortized", amortized)):
        if args.only in (None, name):
            result[name] = fn(args.repeats)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
