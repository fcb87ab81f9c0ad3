"""MAML meta-step speed against a plain forward+backward and the per-task `higher` loop (issue 14).

Setups:

- ``mlp``: sinusoid, 25 tasks, 10 support + 10 query points, 1 inner step, 40-40 MLP (the issue's
  benchmark). Baseline: one plain forward+backward of the same MLP on the same 500 points.
  Also the per-task ``higher`` loop (one ``innerloop_ctx`` per task), the pre-issue-14 route,
  and (second order) MAML hand-written for this MLP, the floor of the batched mechanism.
- ``conv4``: Omniglot-shaped 5-way 1-shot episodes (5 queries per class), Conv4-32 with the
  default TaskNorm, 8 tasks. Baseline: one forward+backward of the same Conv4 on the same
  images (support and query of each task together, normalized per task).

Both second order (MAML) and first order (FOMAML). Contenders are timed interleaved (A, B, A, B)
and every ratio is the median of the per-round ratios (benchmarks/_timing.py). The meta-gradients
are checked against the ``higher`` loop before timing (relative error printed).

    .venv/bin/python benchmarks/bench_maml_step.py [--repeats 50] [--threads 1] [--device cpu]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F
from _timing import interleaved, machine

from bayesmeta.inference import MAML
from bayesmeta.models import MLP, Conv4
from bayesmeta.tasks import Sinusoid, TaskBatch


def higher_step(model: torch.nn.Module, batch: TaskBatch, lr: float, steps: int, first_order: bool) -> list[torch.Tensor]:
    """Per-task loop: the way MAML is written without batching (one `higher` context per task)."""
    import higher

    params = list(model.parameters())
    inner_opt = torch.optim.SGD(params, lr=lr)
    total = None
    for t in range(batch.n_tasks):
        with higher.innerloop_ctx(
            model, inner_opt, copy_initial_weights=False, track_higher_grads=not first_order
        ) as (fmodel, diffopt):
            for _ in range(steps):
                diffopt.step(((fmodel(batch.support_x[t]) - batch.support_y[t]) ** 2).mean())
            q = ((fmodel(batch.query_x[t]) - batch.query_y[t]) ** 2).mean() / batch.n_tasks
            # first order: the gradient at the adapted parameters is theta's (d phi / d theta = I)
            g = torch.autograd.grad(q, list(fmodel.parameters()) if first_order else params)
            total = list(g) if total is None else [a + b for a, b in zip(total, g)]
    assert total is not None
    return total


def hand_batched_step(model: MLP, batch: TaskBatch, lr: float) -> list[torch.Tensor]:
    """The floor for the library's second-order step: MAML written by hand for this one MLP (ReLU,
    1 inner step), parameters as ``[T, *shape]`` expansions, ``baddbmm`` layers, ``autograd.grad``."""
    params = list(model.parameters())
    t = batch.n_tasks

    def f(ps: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        h = x
        for i in range(0, len(ps) - 2, 2):
            h = torch.relu(torch.baddbmm(ps[i + 1].unsqueeze(1), h, ps[i].transpose(1, 2)))
        return torch.baddbmm(ps[-1].unsqueeze(1), h, ps[-2].transpose(1, 2))

    ps = [p.expand(t, *p.shape) for p in params]
    inner = ((f(ps, batch.support_x) - batch.support_y) ** 2).mean((-2, -1)).sum()
    g = torch.autograd.grad(inner, ps, create_graph=True)
    adapted = [p - lr * gi for p, gi in zip(ps, g)]
    q = ((f(adapted, batch.query_x) - batch.query_y) ** 2).mean()
    return list(torch.autograd.grad(q, params))


def meta_grad(learner: MAML, batch: TaskBatch) -> list[torch.Tensor]:
    loss = learner.meta_loss(batch).loss
    return list(torch.autograd.grad(loss, list(learner.model.parameters())))


def rel_err(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    num = sum(float(((x - y) ** 2).sum()) for x, y in zip(a, b)) ** 0.5
    return num / sum(float((y**2).sum()) for y in b) ** 0.5


def mlp_setup(repeats: int, device: torch.device, tasks: int) -> dict[str, object]:
    torch.manual_seed(0)
    model = MLP(1, 1, hidden=(40, 40)).to(device)
    batch = Sinusoid(k_shot=10, n_query=10).sample(tasks, generator=torch.Generator().manual_seed(1)).to(device)
    x = torch.cat([batch.support_x, batch.query_x], 1).reshape(-1, 1)
    y = torch.cat([batch.support_y, batch.query_y], 1).reshape(-1, 1)
    params = list(model.parameters())

    def plain() -> object:
        return torch.autograd.grad(((model(x) - y) ** 2).mean(), params)

    out: dict[str, object] = {}
    for order in ("second", "first"):
        fo = order == "first"
        learner = MAML(model, inner_lr=0.01, inner_steps=1, first_order=fo, task_kind="regression", noise=1.0)
        err = rel_err(meta_grad(learner, batch), higher_step(model, batch, 0.01, 1, fo))
        contenders = {
            "plain_forward_backward": plain,
            "bayesmeta": lambda learner=learner: meta_grad(learner, batch),
            "higher_per_task": lambda fo=fo: higher_step(model, batch, 0.01, 1, fo),
        }
        if not fo:  # the hand-written floor, second order only (the target case)
            contenders["hand_batched"] = lambda: hand_batched_step(model, batch, 0.01)
        res = interleaved(contenders, "plain_forward_backward", repeats)
        out[f"{order}_order"] = {
            "meta_gradient_rel_err_vs_higher": err,
            "ratio_to_plain": res["bayesmeta"]["ratio"],
            "higher_over_bayesmeta": round(res["higher_per_task"]["median_ms"] / res["bayesmeta"]["median_ms"], 2),
            "timings": res,
        }
        if not fo:
            out[f"{order}_order"]["hand_batched_rel_err_vs_higher"] = rel_err(
                hand_batched_step(model, batch, 0.01), higher_step(model, batch, 0.01, 1, fo)
            )
    return out


def conv4_setup(repeats: int, device: torch.device, tasks: int) -> dict[str, object]:
    torch.manual_seed(0)
    n_way, q = 5, 5
    model = Conv4(1, n_way, hidden=32).to(device)
    g = torch.Generator().manual_seed(2)
    sx = torch.randn(tasks, n_way, 1, 28, 28, generator=g).to(device)
    qx = torch.randn(tasks, n_way * q, 1, 28, 28, generator=g).to(device)
    sy = torch.arange(n_way).repeat(tasks, 1).to(device)
    qy = torch.arange(n_way).repeat_interleave(q).repeat(tasks, 1).to(device)
    batch = TaskBatch(sx, sy, qx, qy, n_way=n_way)
    x = torch.cat([sx, qx], 1)
    y = torch.cat([sy, qy], 1)
    params = list(model.parameters())

    def plain() -> object:
        out = model(x, context_mask=None)
        return torch.autograd.grad(F.cross_entropy(out.flatten(0, 1), y.flatten()), params)

    out: dict[str, object] = {}
    for order in ("second", "first"):
        learner = MAML(model, inner_lr=0.1, inner_steps=1, first_order=order == "first", task_kind="classification")
        res = interleaved(
            {"plain_forward_backward": plain, "bayesmeta": lambda learner=learner: meta_grad(learner, batch)},
            "plain_forward_backward",
            repeats,
        )
        out[f"{order}_order"] = {"ratio_to_plain": res["bayesmeta"]["ratio"], "timings": res}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", choices=["mlp", "conv4"], default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    result: dict[str, object] = {"benchmark": "maml_meta_step", "machine": machine(), "repeats": args.repeats}
    if args.only in (None, "mlp"):
        result["mlp_sinusoid_25x10+10_k1"] = mlp_setup(args.repeats, device, 25)
    if args.only in (None, "conv4"):  # --device cuda: untested here (no GPU in the issue-14 session)
        result["conv4_32_omniglot_5w1s_q5_t8_k1"] = conv4_setup(max(5, args.repeats // 5), device, 8)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
