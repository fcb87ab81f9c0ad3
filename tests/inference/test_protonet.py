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


# ------------------------------------------------- gaps found by mutation testing (docs/testing.md)
def _proto_batch(t: int = 3, n_way: int = 3, k: int = 2, q: int = 4, seed: int = 0) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    sy = torch.arange(n_way).repeat(t, k)
    qy = torch.randint(0, n_way, (t, q), generator=g)
    return TaskBatch(torch.randn(t, n_way * k, 5, generator=g, dtype=torch.float64), sy,
                     torch.randn(t, q, 5, generator=g, dtype=torch.float64), qy, n_way=n_way)


def test_meta_loss_and_accuracy_are_the_query_means_by_hand() -> None:
    torch.manual_seed(0)
    proto = ProtoNet(MLP(5, 4, hidden=(8,))).double()
    batch = _proto_batch()
    qmask = torch.ones(3, 4, dtype=torch.bool)
    qmask[1, 2:] = False
    masked = TaskBatch(batch.support_x, batch.support_y, batch.query_x, batch.query_y, query_mask=qmask, n_way=3)
    out = proto.meta_loss(masked)
    with torch.no_grad():
        logp = proto.predict(proto.adapt(batch.support), batch.query_x).sample_log_probs[0]  # [T, Q, C]
    nll = -logp.gather(-1, batch.query_y[..., None])[..., 0]
    hit = (logp.argmax(-1) == batch.query_y).double()
    torch.testing.assert_close(out.loss, nll[qmask].mean(), rtol=1e-12, atol=0)  # float64
    assert out.metrics["loss"] == pytest.approx(float(nll[qmask].mean()), rel=1e-12)
    assert out.metrics["accuracy"] == pytest.approx(float(hit[qmask].mean()), abs=1e-12)


def test_a_backbone_with_a_head_is_embedded_by_its_features() -> None:
    """ProtoNet measures distances between features(), not between the head's logits."""
    torch.manual_seed(0)
    backbone = MLP(5, 7, hidden=(8,)).double()
    proto = ProtoNet(backbone)
    x = torch.randn(2, 3, 5, dtype=torch.float64)
    torch.testing.assert_close(proto.embed(x), backbone.features(x.flatten(0, 1)).reshape(2, 3, -1), rtol=0, atol=0)
    assert proto.embed(x).shape[-1] == 8


def test_wrong_input_shapes_are_named_by_field() -> None:
    from bayesmeta.exceptions import BayesMetaError, ConfigError

    proto = ProtoNet(MLP(5, 4, hidden=(8,)))
    b = _proto_batch().to(dtype=torch.float32)
    bad = TaskBatch(b.support_x[..., :4], b.support_y, b.query_x[..., :4], b.query_y, n_way=3)
    with pytest.raises(BayesMetaError, match=r"^support_x"):
        proto.adapt(bad.support)
    with pytest.raises(BayesMetaError, match=r"^support_x"):
        proto.meta_loss(bad)
    post = proto.adapt(b.support)
    with pytest.raises(BayesMetaError, match=r"^query_x"):
        proto.predict(post, b.query_x[..., :4])
    bad_q = TaskBatch(b.support_x, b.support_y, b.query_x, b.query_y, n_way=3)
    assert proto.meta_loss(bad_q).loss.dim() == 0  # the good batch goes through
    with pytest.raises(ConfigError, match=r"^backbone: expected a torch.nn.Module, got str"):
        ProtoNet("conv4")  # type: ignore[arg-type]
