"""How much posterior variance a trained VERSA run keeps on its classification head.

    .venv/bin/python benchmarks/versa_head_variance.py runs/versa --checkpoint last --episodes 20

VERSA infers a Gaussian over each class's head; its predictive is a mixture over sampled logits.
This reports, on the run's first ``--episodes`` test episodes, the spread of those logits
(``output_moments``' standard deviation) against the gap between the two largest mean logits, and
the head weights' log-variance (initialised at -6). A logit spread far below the gap means the
mixture's members agree: the learner predicts like a point estimate whatever its objective.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json

import torch

from bayesmeta.config import build_episodes
from bayesmeta.exceptions import ConfigError
from bayesmeta.inference.versa import VERSA
from bayesmeta.runs import load_learner


def _quantiles(x: torch.Tensor) -> dict[str, float]:
    q = x.double().quantile(torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
    return {"q10": float(q[0]), "median": float(q[1]), "q90": float(q[2]), "max": float(x.max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("--checkpoint", choices=("best", "last"), default="best")
    ap.add_argument("--episodes", type=int, default=20, help="test tasks (episodes) to look at, the first of the run's test episodes (default 20)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    learner, cfg = load_learner(args.run_dir, args.checkpoint)
    if not isinstance(learner, VERSA) or learner.task_kind != "classification" or not learner.variance:
        raise SystemExit(f"versa_head_variance: {args.run_dir} is not a VERSA classification run with variance")
    if args.episodes < 1:
        raise SystemExit(f"versa_head_variance: --episodes: expected a positive number, got {args.episodes}")
    try:
        cfg["evaluation"] = {**cfg["evaluation"], "n_episodes": args.episodes}
        episodes = build_episodes(cfg, "test")
    except ConfigError as e:
        raise SystemExit(f"versa_head_variance: {e}") from None
    learner.eval()
    std, gap, w_logvar = [], [], []
    with torch.no_grad():
        for batch in episodes:
            post = learner.adapt(batch.support)
            mean, var = learner.output_moments(post, batch.query_x)  # [T, Q, C] each
            assert var is not None and post.head.w_logvar is not None
            top2 = mean.topk(2, dim=-1).values
            gap.append((top2[..., 0] - top2[..., 1]).flatten())
            std.append(var.sqrt().flatten())
            w_logvar.append(post.head.w_logvar.flatten())
    print(json.dumps({
        "run_dir": args.run_dir, "checkpoint": args.checkpoint, "tasks": sum(b.query_x.shape[0] for b in episodes),
        "logit_std": _quantiles(torch.cat(std)), "top2_logit_gap": _quantiles(torch.cat(gap)),
        "head_weight_logvar": _quantiles(torch.cat(w_logvar)),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
