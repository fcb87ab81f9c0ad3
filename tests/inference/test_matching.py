"""Matching networks: logits against a hand-written cosine attention, and the FCE option."""

from __future__ import annotations

import pytest
import torch

from bayesmeta.exceptions import ConfigError, InvalidValueError
from bayesmeta.inference import MatchingNet
from bayesmeta.models import MLP
from bayesmeta.tasks import TaskBatch

T, S, Q, C = 3, 7, 5, 3


def _batch(seed: int = 0, masked: bool = False) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    sy = torch.tensor([0, 1, 2, 0, 1, 2, 2]).repeat(T, 1)
    mask = None
    if masked:
        mask = torch.ones(T, S, dtype=torch.bool)
        mask[1, 3:6] = False
    return TaskBatch(
        torch.randn(T, S, 4, generator=g, dtype=torch.float64), sy,
        torch.randn(T, Q, 4, generator=g, dtype=torch.float64), torch.randint(0, C, (T, Q), generator=g),
        support_mask=mask, n_way=C,
    )


def _hand_log_probs(embed, batch: TaskBatch, scale: float) -> torch.Tensor:
    """p(k | x) = sum_i softmax_i(scale cos(f(x), f(x_i))) [y_i = k], one task and query at a time."""
    out = torch.zeros(T, Q, C, dtype=torch.float64)
    for t in range(T):
        keep = torch.ones(S, dtype=torch.bool) if batch.support_mask is None else batch.support_mask[t]
        fs, ys = embed(batch.support_x[t][keep]), batch.support_y[t][keep]
        for q in range(Q):
            fq = embed(batch.query_x[t, q : q + 1])[0]
            cos = torch.stack([torch.dot(fq, v) / (fq.norm() * v.norm()) for v in fs])
            a = torch.softmax(scale * cos, 0)
            for k in range(C):
                out[t, q, k] = torch.log(a[ys == k].sum())
    return out


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("scale", [1.0, 7.5])
def test_logits_equal_a_hand_written_cosine_attention(masked: bool, scale: float) -> None:
    torch.manual_seed(0)
    learner = MatchingNet(MLP(4, None, hidden=(6,), activation=torch.nn.Tanh), scale=scale).double()
    batch = _batch(masked=masked)
    with torch.no_grad():
        pred = learner(batch)
        expected = _hand_log_probs(learner.backbone.features, batch, scale)
    # float64: a handful of flops per entry, agreement to ~1e-15
    torch.testing.assert_close(pred.sample_log_probs[0], expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(pred.probs.sum(-1), torch.ones(T, Q, dtype=torch.float64))


def test_meta_loss_is_the_query_cross_entropy_and_the_scale_is_learned() -> None:
    torch.manual_seed(0)
    learner = MatchingNet(MLP(4, None, hidden=(6,), activation=torch.nn.Tanh), learn_scale=True).double()
    batch = _batch()
    out = learner.meta_loss(batch)
    with torch.no_grad():
        lp = _hand_log_probs(learner.backbone.features, batch, 1.0)
    expected = -lp.gather(-1, batch.query_y[..., None]).mean()
    torch.testing.assert_close(out.loss.detach(), expected, rtol=1e-12, atol=0)
    out.loss.backward()
    assert learner.log_scale.grad is not None and float(learner.log_scale.grad.abs()) > 0


def test_fce_ignores_padded_support_points() -> None:
    """A padded point (any value) changes nothing: equal to the same task without it."""
    torch.manual_seed(0)
    learner = MatchingNet(MLP(4, None, hidden=(6,), activation=torch.nn.Tanh), fce=True).double()
    batch = _batch(masked=True)
    noisy = TaskBatch(
        torch.where(batch.support_mask[..., None], batch.support_x, torch.full_like(batch.support_x, 50.0)),
        batch.support_y, batch.query_x, batch.query_y, support_mask=batch.support_mask, n_way=C,
    )
    keep = batch.support_mask[1]
    alone = TaskBatch(batch.support_x[1:2, keep], batch.support_y[1:2, keep], batch.query_x[1:2], batch.query_y[1:2], n_way=C)
    with torch.no_grad():
        a = learner(noisy).probs
        b = learner(alone).probs
    torch.testing.assert_close(a[1:2], b, rtol=1e-12, atol=1e-12)
    # and FCE does change the embeddings (it is not a no-op)
    plain = MatchingNet(learner.backbone).double()
    with torch.no_grad():
        assert float((plain(batch).probs - learner(batch).probs).abs().max()) > 1e-3


def test_empty_class_and_bad_options_are_refused() -> None:
    learner = MatchingNet(MLP(4, None, hidden=(6,), activation=torch.nn.Tanh)).double()
    batch = _batch()
    mask = torch.ones(T, S, dtype=torch.bool)
    mask[2, [1, 4]] = False  # class 1 of task 2 has no present point
    bad = TaskBatch(batch.support_x, batch.support_y, batch.query_x, batch.query_y, support_mask=mask, n_way=C)
    with pytest.raises(InvalidValueError, match="class 1 of task 2"):
        learner.meta_loss(bad)
    with pytest.raises(ConfigError, match="scale"):
        MatchingNet(MLP(4, None, hidden=(6,), activation=torch.nn.Tanh), scale=0.0)
    with pytest.raises(ConfigError, match="feature_dim"):
        MatchingNet(torch.nn.Linear(4, 6), fce=True)
    with pytest.raises(ConfigError, match="fce_steps"):
        MatchingNet(MLP(4, None, hidden=(6,), activation=torch.nn.Tanh), fce=True, fce_steps=0)
