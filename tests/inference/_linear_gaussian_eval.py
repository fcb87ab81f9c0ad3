"""Shared by the BMAML and PLATIPUS tests: train briefly on LinearGaussian tasks and score the
predictive against the exact posterior predictive per support size (a helper, not a test file)."""

from __future__ import annotations

import torch

from bayesmeta.diagnostics.reference import exact_reference, score_against_reference
from bayesmeta.tasks import LinearGaussian, TaskBatch

LG = LinearGaussian(k_shot=10, n_query=10, noise_std=0.3, x_range=(-2.0, 2.0), dtype=torch.float64)
K_EVAL = (1, 2, 5, 10)


def with_k(b: TaskBatch, k: int) -> TaskBatch:
    """The batch with only its first ``k`` support points present."""
    mask = torch.zeros(b.support_x.shape[:2], dtype=torch.bool)
    mask[:, :k] = True
    return TaskBatch(b.support_x, b.support_y, b.query_x, b.query_y, support_mask=mask)


def lg_train(learner: torch.nn.Module, steps: int, seed: int = 0) -> None:
    """Adam on LinearGaussian batches whose support sizes are drawn from 1..10 (masks)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(learner.parameters(), lr=0.01)
    for _ in range(steps):
        b = LG.sample(25, g)
        k = torch.randint(1, 11, (25, 1), generator=g)
        b = TaskBatch(b.support_x, b.support_y, b.query_x, b.query_y, support_mask=torch.arange(10)[None] < k)
        opt.zero_grad()
        learner.meta_loss(b).loss.backward()
        opt.step()


def lg_scores(learner: torch.nn.Module, seeded_adapt: bool = False) -> dict[int, dict[str, float]]:
    """Mean predictive variance, KL(exact || learner) and W2 per support size on fixed episodes.

    ``seeded_adapt`` passes a fresh ``Generator(0)`` to ``adapt`` for every support size (for
    learners whose adaptation samples, such as PLATIPUS).
    """
    b = LG.sample(50, torch.Generator().manual_seed(123))
    out = {}
    for k in K_EVAL:
        bk = with_k(b, k)
        kw = {"generator": torch.Generator().manual_seed(0)} if seeded_adapt else {}
        with torch.no_grad():
            pred = learner.predict(learner.adapt(bk.support, **kw), bk.query_x)
        sc = score_against_reference(pred, exact_reference(LG, bk, bk.query_x))
        out[k] = {"var": float(pred.variance.mean()), "kl": float(sc["kl"].mean()), "w2": float(sc["w2"].mean())}
    return out
