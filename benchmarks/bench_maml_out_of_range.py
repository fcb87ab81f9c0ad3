"""Why MAML's out-of-range MSE in the DKT protocol is 56 (issue 13): protocol or defect?

Prints one JSON object. MAML (40-40 ReLU MLP, one inner step of 0.01, meta-batch 8, Adam 1e-3,
seed 0) is meta-trained on the DKT protocol's noisy sinusoids (5 support + 5 query in [-5, 5],
noise 0.1) and scored on 200 fixed tasks whose 5 support and 195 query points are all in
[-5, 10] (the paper's out-of-range test), split by where the query lies, for several test-time
inner loops: no step (the meta-learned initial function), one step of 0.01 (the trained
setting), and one step of a smaller size. ``step_gain`` is the median over 101 grid points x of
``lr * ||d f(x)/d theta||^2`` (the trained initial network), the factor by which one gradient step
scales a residual at x: above 2 a step overshoots (the residual grows and flips sign).

    .venv/bin/python benchmarks/bench_maml_out_of_range.py --steps 4000
"""

from __future__ import annotations

import argparse
import json

import torch
from torch.func import functional_call, grad, vmap

from bayesmeta.inference import MAML
from bayesmeta.models import MLP
from bayesmeta.tasks import Sinusoid, fixed_episodes
from bayesmeta.training import MetaTrainer


def region_mse(learner: MAML, episodes: list, steps: int, lr: float) -> dict[str, float]:
    sq_in, sq_out, n_in, n_out = 0.0, 0.0, 0, 0
    old = learner.inner_lr
    try:
        learner.inner_lr = lr
        with torch.no_grad():
            for b in episodes:
                mean = learner.predict(learner.adapt(b.support, steps=steps), b.query_x).mean
                err = ((mean - b.query_y) ** 2)[..., 0]
                inside = b.query_x[..., 0] <= 5.0
                sq_in += float(err[inside].sum())
                n_in += int(inside.sum())
                sq_out += float(err[~inside].sum())
                n_out += int((~inside).sum())
    finally:
        learner.inner_lr = old
    return {
        "mse_x_in_-5_5": round(sq_in / n_in, 3),
        "mse_x_in_5_10": round(sq_out / n_out, 3) if n_out else None,
        "mse_all": round((sq_in + sq_out) / (n_in + n_out), 3),
    }


def step_gain(learner: MAML, episodes: list, lr: float) -> dict[str, float]:
    params = dict(learner.model.named_parameters())

    def f(p, x):
        return functional_call(learner.model, p, (x.reshape(1, 1),))[0, 0]

    out = {}
    for name, lo, hi in (("x_in_-5_5", -5.0, 5.0), ("x_in_5_10", 5.0, 10.0)):
        xs = torch.linspace(lo, hi, 101)
        g = vmap(grad(f), in_dims=(None, 0))(params, xs)
        sq = sum((v.reshape(len(xs), -1) ** 2).sum(-1) for v in g.values())
        out[name] = round(float(lr * sq.detach().median()), 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--episodes", type=int, default=200)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    maml = MAML(MLP(1, 1, hidden=(40, 40)), inner_lr=0.01, inner_steps=1, task_kind="regression")
    MetaTrainer(
        maml,
        Sinusoid(k_shot=5, n_query=5, noise_std=0.1),
        steps=args.steps,
        meta_batch_size=8,
        lr=1e-3,
        seed=0,
        progress=False,
    ).fit()
    maml.eval()
    oor = fixed_episodes(
        Sinusoid(k_shot=5, n_query=195, x_range=(-5, 10), noise_std=0.1),
        args.episodes,
        seed=1234,
        tasks_per_batch=20,
    )
    inr = fixed_episodes(
        Sinusoid(k_shot=5, n_query=195, noise_std=0.1), args.episodes, seed=1234, tasks_per_batch=20
    )
    # predicting 0 everywhere: E[A^2 sin^2] + noise = E[A^2] / 2 + 0.01 with A ~ U(0.1, 5)
    zero = (5.0**3 - 0.1**3) / (3 * 4.9) / 2 + 0.01
    out = {
        "steps": args.steps,
        "predict_zero_mse": round(zero, 3),
        "out_of_range": {
            "no_step": region_mse(maml, oor, 0, 0.01),
            "one_step_0.01": region_mse(maml, oor, 1, 0.01),
            "one_step_0.001": region_mse(maml, oor, 1, 0.001),
        },
        "in_range": {
            "no_step": region_mse(maml, inr, 0, 0.01),
            "one_step_0.01": region_mse(maml, inr, 1, 0.01),
        },
        "step_gain_lr_0.01": step_gain(maml, oor, 0.01),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
