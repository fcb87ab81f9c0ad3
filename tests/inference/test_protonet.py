"""ProtoNet against a hand computation, and the same-episodes guarantee across methods."""

from __future__ import annotations

import pytest
import torch

from bayesmeta.config import build_episodes, resolve_config
from bayesmeta.exceptions import InvalidValueError
from bayesmeta.inference import ProtoNet
from bayesmeta.models import MLP
from bayesmeta.tasks import TaskBatch


def test_logits_equal_negative_squared_distance_by_hand() -> None:
    torch.manual_seed(0)
    net = MLP(4, 3, hidden=(8,)).double()
    learner = ProtoNet(net)
    t, n_way, k, q = 2, 3, 2, 5
    sx = torch.randn(t, n_way * k, 4, dtype=torch.float64)
    sy = torch.arange(n_way).repeat_interleave(k).repeat(t, 1)
    qx = torch.randn(t, q, 4, dtype=torch.float64)
    batch = TaskBatch(sx, sy, qx, torch.zeros(t, q, dtype=torch.long), n_way=n_way)
    pred = learner(batch)
    for ti in range(t):
        feats = net.features(sx[ti])
        protos = [feats[sy[ti] == c].mean(0) for c in range(n_way)]
        for qi in range(q):
            f = net.features(qx[ti, qi])
            by_hand = torch.stack([-((f - c) ** 2).sum() for c in protos])
            torch.testing.assert_close(pred.sample_log_probs[0, ti, qi], torch.log_softmax(by_hand, -1))
            torch.testing.assert_close(
                ProtoNet.logits(learner.embed(qx[:, qi : qi + 1]), learner.adapt(batch.support).prototypes)[ti, 0],
                by_hand,
            )


def test_class_without_support_example_is_named() -> None:
    learner = ProtoNet(MLP(2, 2))
    sy = torch.tensor([[0, 0, 2]])  # class 1 missing
    with pytest.raises(InvalidValueError, match="class 1 of task 0 has none"):
        learner.adapt(TaskBatch(torch.randn(1, 3, 2), sy, torch.randn(1, 1, 2), torch.zeros(1, 1, dtype=torch.long), n_way=3).support)


def test_two_methods_get_the_very_same_evaluation_episodes() -> None:
    tasks = {"name": "omniglot", "n_way": 5, "k_shot": 1, "n_query": 3}
    ev = {"n_episodes": 3, "seed": 7, "tasks_per_batch": 2}
    a = build_episodes(resolve_config({"method": {"name": "protonet"}, "tasks": tasks, "evaluation": ev}), "test")
    b = build_episodes(resolve_config({"method": {"name": "maml", "inner_lr": 0.4}, "tasks": tasks, "evaluation": ev}), "test")
    again = build_episodes(resolve_config({"method": {"name": "protonet"}, "tasks": tasks, "evaluation": ev}), "test")
    for x, y, z in zip(a, b, again):
        assert torch.equal(x.support_x, y.support_x) and torch.equal(x.query_y, y.query_y)
        assert torch.equal(x.support_x, z.support_x)
    other = build_episodes(resolve_config({"method": {"name": "protonet"}, "tasks": tasks, "evaluation": {**ev, "seed": 8}}), "test")
    assert not torch.equal(a[0].support_x, other[0].support_x)
