"""VERSA: the ProtoNets reduction, invariances, masks, gradients and bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bayesmeta.exceptions import BayesMetaError, InvalidValueError, ShapeError
from bayesmeta.inference.versa import VERSA, VERSAPosterior
from bayesmeta.models import MLP, Conv4
from bayesmeta.models.amortization import HeadGaussian
from bayesmeta.predictive import CategoricalPredictive, GaussianPredictive
from bayesmeta.tasks import SupportSet, TaskBatch

F64 = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one intra-op thread avoids thread-pool overhead, which dominates on a
    loaded machine (10x slower steps measured with 2 threads)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Features(nn.Module):
    """A head-less feature extractor (every parameter is used by ``features``)."""

    def __init__(self, in_features: int, feature_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, 16), nn.Tanh(), nn.Linear(16, feature_dim))
        self.feature_dim = feature_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _cls_batch(t: int = 3, n_way: int = 4, k: int = 3, q: int = 5, d: int = 6, seed: int = 0, dtype=F64) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    centers = 2.0 * torch.randn(t, n_way, d, generator=g, dtype=dtype)
    sy = torch.arange(n_way).repeat(k).expand(t, -1).contiguous()  # [T, N*K]
    qy = torch.randint(0, n_way, (t, q), generator=g)
    sx = centers.gather(1, sy.unsqueeze(-1).expand(-1, -1, d)) + torch.randn(t, n_way * k, d, generator=g, dtype=dtype)
    qx = centers.gather(1, qy.unsqueeze(-1).expand(-1, -1, d)) + torch.randn(t, q, d, generator=g, dtype=dtype)
    return TaskBatch(sx, sy, qx, qy, n_way=n_way)


def _reg_batch(t: int = 3, s: int = 8, q: int = 6, seed: int = 0) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    sx = torch.rand(t, s, 1, generator=g, dtype=F64) * 4 - 2
    qx = torch.rand(t, q, 1, generator=g, dtype=F64) * 4 - 2
    a = torch.rand(t, 1, 1, generator=g, dtype=F64) + 0.5
    return TaskBatch(sx, a * torch.sin(3 * sx), qx, a * torch.sin(3 * qx))


def _permute_support(batch: TaskBatch, seed: int = 1) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    t, s = batch.support_x.shape[:2]
    perm = torch.stack([torch.randperm(s, generator=g) for _ in range(t)])  # a different order per task
    take = lambda v: v.gather(1, perm.reshape(t, s, *([1] * (v.dim() - 2))).expand_as(v))  # noqa: E731
    mask = None if batch.support_mask is None else take(batch.support_mask)
    return TaskBatch(take(batch.support_x), take(batch.support_y), batch.query_x, batch.query_y, mask, batch.query_mask, batch.n_way)


def _pad_support(batch: TaskBatch, extra: int, label: int = 0, seed: int = 2) -> TaskBatch:
    """Append ``extra`` hidden support points holding garbage (huge inputs, a real label)."""
    g = torch.Generator().manual_seed(seed)
    sx, sy = batch.support_x, batch.support_y
    t, s = sx.shape[:2]
    gx = 1e3 * torch.randn(t, extra, *sx.shape[2:], generator=g, dtype=sx.dtype)
    gy = torch.full((t, extra), label) if batch.is_classification else 1e3 * torch.randn(t, extra, sy.shape[-1], generator=g, dtype=sy.dtype)
    mask = torch.cat([torch.ones(t, s, dtype=torch.bool), torch.zeros(t, extra, dtype=torch.bool)], 1)
    return TaskBatch(torch.cat([sx, gx], 1), torch.cat([sy, gy], 1), batch.query_x, batch.query_y, mask, None, batch.n_way)


# --------------------------------------------------------------------------- ProtoNets reduction
def test_prototype_amortization_reduces_to_protonet_exactly() -> None:
    from bayesmeta.inference.protonet import ProtoNet

    torch.manual_seed(0)
    backbone = MLP(6, 1, hidden=(16, 8)).double()
    versa = VERSA(backbone, amortization="prototype")
    proto = ProtoNet(backbone)
    batch = _cls_batch()
    assert not versa.variance

    post = versa.adapt(batch.support)
    logits, var = versa.output_moments(post, batch.query_x)
    assert var is None
    # by hand: prototypes c_k and -||f(x) - c_k||^2
    f_s, f_q = backbone.features(batch.support_x), backbone.features(batch.query_x)
    onehot = nn.functional.one_hot(batch.support_y, batch.n_way).to(F64)
    c = torch.einsum("tsc,tsd->tcd", onehot, f_s) / onehot.sum(1).unsqueeze(-1)
    neg_sq = -((f_q.unsqueeze(2) - c.unsqueeze(1)) ** 2).sum(-1)  # [T, Q, C]
    sq_norm = (f_q**2).sum(-1, keepdim=True)  # the class-independent ||f(x)||^2 term
    torch.testing.assert_close(logits, neg_sq + sq_norm, rtol=0, atol=1e-12)
    torch.testing.assert_close(post.head.w_mean, 2 * c, rtol=0, atol=1e-12)
    torch.testing.assert_close(post.head.b_mean, -(c**2).sum(-1), rtol=0, atol=1e-12)

    # ProtoNets' own logits and predictive: identical up to that shift, so identical softmax
    p_logits = ProtoNet.logits(proto.embed(batch.query_x), proto.adapt(batch.support).prototypes)
    torch.testing.assert_close(logits, p_logits + sq_norm, rtol=0, atol=1e-12)
    pv = versa.predict(post, batch.query_x)
    pp = proto.predict(proto.adapt(batch.support), batch.query_x)
    assert pv.n_samples == 1
    torch.testing.assert_close(pv.sample_log_probs, pp.sample_log_probs, rtol=0, atol=1e-12)

    # and the same meta-objective and meta-gradient
    lv, lp = versa.meta_loss(batch).loss, proto.meta_loss(batch).loss
    torch.testing.assert_close(lv, lp, rtol=0, atol=1e-12)
    gv = torch.autograd.grad(lv, list(backbone.body.parameters()))
    gp = torch.autograd.grad(lp, list(backbone.body.parameters()))
    for a, b in zip(gv, gp, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_custom_amortization_module_with_prototype_map_gives_protonet_logits() -> None:
    """The plug-in path: any module returning a HeadGaussian; no variance -> M = 1."""

    class MeanPool(nn.Module):
        variance = False

        def forward(self, c: torch.Tensor) -> HeadGaussian:
            return HeadGaussian(2 * c, -(c**2).sum(-1))

    torch.manual_seed(0)
    backbone = Features(6, 5).double()
    versa = VERSA(backbone, amortization=MeanPool(), n_samples=7)
    batch = _cls_batch()
    pred = versa(batch)
    f_s, f_q = backbone.features(batch.support_x), backbone.features(batch.query_x)
    onehot = nn.functional.one_hot(batch.support_y, batch.n_way).to(F64)
    c = torch.einsum("tsc,tsd->tcd", onehot, f_s) / onehot.sum(1).unsqueeze(-1)
    expected = torch.log_softmax(-((f_q.unsqueeze(2) - c.unsqueeze(1)) ** 2).sum(-1), -1)
    assert pred.n_samples == 1
    torch.testing.assert_close(pred.sample_log_probs[0], expected, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------- predictive
def test_classification_predictive_shapes_and_sampling() -> None:
    torch.manual_seed(0)
    versa = VERSA(Features(6, 5), n_samples=9).double()
    batch = _cls_batch()
    post = versa.adapt(batch.support)
    assert isinstance(post, VERSAPosterior) and post.n_tasks == 3
    assert post.head.w_mean.shape == (3, 4, 5) and post.head.b_mean.shape == (3, 4)
    assert post.head.w_logvar is not None and post.head.w_logvar.shape == (3, 4, 5)
    pred = versa.predict(post, batch.query_x)
    assert isinstance(pred, CategoricalPredictive)
    assert pred.sample_log_probs.shape == (9, 3, 5, 4)
    assert float(pred.mutual_information.detach().max()) > 0  # the samples differ
    # the draws belong to the posterior: seeded by adapt's generator, reused by every predict
    g1, g2, g3 = (torch.Generator().manual_seed(s) for s in (5, 5, 6))
    post1, post2, post3 = (versa.adapt(batch.support, generator=g) for g in (g1, g2, g3))
    a = versa.predict(post1, batch.query_x, n_samples=4).sample_log_probs
    b = versa.predict(post2, batch.query_x, n_samples=4).sample_log_probs
    assert a.shape[0] == 4
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(versa.predict(post1, batch.query_x, n_samples=4).sample_log_probs, a, rtol=0, atol=0)
    assert not torch.equal(versa.predict(post3, batch.query_x, n_samples=4).sample_log_probs, a)


def test_one_amortization_network_serves_any_number_of_ways() -> None:
    torch.manual_seed(0)
    versa = VERSA(Features(6, 5), n_samples=3).double()
    for n_way in (2, 5, 11):
        batch = _cls_batch(n_way=n_way, k=2)
        pred = versa(batch)
        assert pred.sample_log_probs.shape == (3, 3, 5, n_way)


def test_local_reparameterization_matches_moments() -> None:
    """The L logit samples have the closed-form mean and variance of f.w + b under q."""
    torch.manual_seed(0)
    versa = VERSA(Features(6, 5), n_samples=20000).double()
    with torch.no_grad():  # make the variances visible (the heads start almost deterministic)
        versa.amortization.weight_logvar[-1].bias.fill_(-1.0)
    batch = _cls_batch(t=1, q=2)
    with torch.no_grad():
        post = versa.adapt(batch.support)
        mean, var = versa.output_moments(post, batch.query_x)
        torch.manual_seed(0)
        local = versa._local_reparam_samples(post.head, versa.embed(batch.query_x))  # meta-training's draws
        sampled = versa._head_samples(post, versa.embed(batch.query_x), None)  # predict's draws (weights)
    assert var is not None and float(var.min()) > 0.01
    assert local.shape == sampled.shape == (versa.n_samples, *mean.shape)
    for samples in (local, sampled):
        # 4 standard errors of a 20000-sample mean
        torch.testing.assert_close(samples.mean(0), mean, rtol=0, atol=4 * float(var.max().sqrt()) / 141)
        # sample variance of L = 20000 Gaussian draws: relative standard error sqrt(2 / (L - 1)) = 1.0%,
        # so rtol = 0.05 is 5 standard errors (the logits are Gaussian under both samplers)
        torch.testing.assert_close(samples.var(0), var, rtol=0.05, atol=0)


def test_regression_predictive_is_mixture_with_noise() -> None:
    torch.manual_seed(0)
    versa = VERSA(Features(1, 8), task_kind="regression", n_samples=6, hidden=16).double()
    batch = _reg_batch()
    post = versa.adapt(batch.support)
    assert post.head.w_mean.shape == (3, 8, 1) and post.head.noise_std.shape == (3, 1)
    pred = versa.predict(post, batch.query_x)
    assert isinstance(pred, GaussianPredictive)
    assert pred.sample_mean.shape == (6, 3, 6, 1)
    noise_var = post.head.noise_std.detach() ** 2
    torch.testing.assert_close(pred.sample_variance, noise_var[None, :, None, :].expand(6, 3, 6, 1).to(F64))


# ------------------------------------------------------------------------------- invariances
@pytest.mark.parametrize("kind", ["classification", "regression"])
def test_support_shuffling_leaves_predictive_unchanged(kind: str) -> None:
    torch.manual_seed(0)
    if kind == "classification":
        versa, batch = VERSA(Features(6, 5), n_samples=5).double(), _cls_batch()
        with torch.no_grad():
            versa.amortization.weight_logvar[-1].bias.fill_(-1.0)
    else:
        versa, batch = VERSA(Features(1, 8), task_kind="regression", n_samples=5, hidden=16).double(), _reg_batch()
    shuffled = _permute_support(batch)
    assert not torch.equal(shuffled.support_x, batch.support_x)
    a = versa.predict(versa.adapt(batch.support, generator=torch.Generator().manual_seed(3)), batch.query_x)
    b = versa.predict(versa.adapt(shuffled.support, generator=torch.Generator().manual_seed(3)), batch.query_x)
    if kind == "classification":
        torch.testing.assert_close(a.sample_log_probs, b.sample_log_probs, rtol=0, atol=1e-6)
    else:
        torch.testing.assert_close(a.sample_mean, b.sample_mean, rtol=0, atol=1e-6)
        torch.testing.assert_close(a.sample_variance, b.sample_variance, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", ["classification", "regression"])
def test_masked_garbage_support_points_do_not_matter(kind: str) -> None:
    torch.manual_seed(0)
    if kind == "classification":
        versa, batch = VERSA(Features(6, 5), n_samples=5).double(), _cls_batch()
    else:
        versa, batch = VERSA(Features(1, 8), task_kind="regression", n_samples=5, hidden=16).double(), _reg_batch()
    padded = _pad_support(batch, extra=4)
    a = versa.predict(versa.adapt(batch.support, generator=torch.Generator().manual_seed(3)), batch.query_x)
    b = versa.predict(versa.adapt(padded.support, generator=torch.Generator().manual_seed(3)), batch.query_x)
    if kind == "classification":
        torch.testing.assert_close(a.sample_log_probs, b.sample_log_probs, rtol=0, atol=1e-10)
    else:
        torch.testing.assert_close(a.sample_mean, b.sample_mean, rtol=0, atol=1e-10)
    # meta_loss samples from the global RNG: the same seed draws the same noise (it is drawn per
    # task and query, not per support point), so the losses agree to float64 rounding
    torch.manual_seed(5)
    loss = versa.meta_loss(batch).loss
    torch.manual_seed(5)
    torch.testing.assert_close(versa.meta_loss(padded).loss, loss, rtol=0, atol=1e-12)
    torch.manual_seed(6)  # ...and a different seed gives a different loss: the check can fail
    assert abs(float(versa.meta_loss(batch).loss - loss)) > 1e-6


def test_masked_query_points_are_left_out_of_the_loss() -> None:
    torch.manual_seed(0)
    versa = VERSA(Features(6, 5), variance=False).double()
    batch = _cls_batch()
    qmask = torch.ones(batch.query_y.shape, dtype=torch.bool)
    qmask[:, -2:] = False
    qy = batch.query_y.clone()
    qy[:, -2:] = 99  # out-of-range labels on hidden points must not matter
    masked = TaskBatch(batch.support_x, batch.support_y, batch.query_x, qy, None, qmask, batch.n_way)
    trimmed = TaskBatch(batch.support_x, batch.support_y, batch.query_x[:, :-2], batch.query_y[:, :-2], n_way=batch.n_way)
    torch.testing.assert_close(versa.meta_loss(masked).loss, versa.meta_loss(trimmed).loss, rtol=1e-12, atol=0)


# ------------------------------------------------------------------------- learner contract
@pytest.mark.parametrize("kind", ["classification", "regression"])
def test_gradients_reach_every_parameter(kind: str) -> None:
    torch.manual_seed(0)
    if kind == "classification":
        versa = VERSA(Conv4(hidden=8, norm="group"), n_samples=3)
        g = torch.Generator().manual_seed(0)
        batch = TaskBatch(
            torch.randn(2, 6, 1, 28, 28, generator=g), torch.arange(3).repeat(2).expand(2, -1).contiguous(),
            torch.randn(2, 4, 1, 28, 28, generator=g), torch.randint(0, 3, (2, 4), generator=g), n_way=3,
        )
    else:
        versa, batch = VERSA(Features(1, 8), task_kind="regression", hidden=16), _reg_batch().to(dtype=torch.float32)
    out = versa.meta_loss(batch)
    out.loss.backward()
    # every parameter learns: the class-bias network has no shared output bias (a logit shift
    # common to all classes is unidentifiable under the softmax, so its gradient would be zero)
    missing = [n for n, p in versa.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert missing == []
    assert out.metrics["nll"] == float(out.loss.detach())  # the objective is the predictive NLL


def test_adapt_is_pure_and_seeded_predictions_are_deterministic() -> None:
    torch.manual_seed(0)
    versa = VERSA(Features(6, 5), n_samples=4).double()
    batch = _cls_batch()
    before = {k: v.clone() for k, v in versa.state_dict().items()}
    post = versa.adapt(batch.support)
    assert all(torch.equal(before[k], v) for k, v in versa.state_dict().items())
    assert all(p.grad is None for p in versa.parameters())
    torch.manual_seed(11)
    a = versa.predict(post, batch.query_x).sample_log_probs
    torch.manual_seed(11)
    b = versa.predict(post, batch.query_x).sample_log_probs
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_versa_learns_gaussian_clusters_quickly() -> None:
    """A short meta-training run beats chance by far on well-separated clusters."""
    torch.manual_seed(0)
    versa = VERSA(Features(6, 8), n_samples=5, hidden=32)
    opt = torch.optim.Adam(versa.parameters(), lr=3e-3)
    for step in range(150):
        out = versa.meta_loss(_cls_batch(t=8, seed=100 + step, dtype=torch.float32))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    test = _cls_batch(t=32, q=10, seed=7, dtype=torch.float32)
    with torch.no_grad():
        acc = (versa(test).predicted == test.query_y).double().mean()
    assert float(acc) > 0.8  # chance is 0.25


# ------------------------------------------------------------------------------- bad input
def test_class_without_support_example_is_named() -> None:
    versa = VERSA(Features(6, 5)).double()
    batch = _cls_batch()
    sy = batch.support_y.clone()
    sy[1][sy[1] == 2] = 0  # task 1 loses every example of class 2
    with pytest.raises(InvalidValueError, match="class 2 of task 1") as info:
        versa.adapt(SupportSet(batch.support_x, sy, None, batch.n_way))
    assert isinstance(info.value, BayesMetaError)


def test_class_whose_examples_are_all_masked_is_named() -> None:
    versa = VERSA(Features(6, 5)).double()
    batch = _cls_batch()
    mask = torch.ones(batch.support_y.shape, dtype=torch.bool)
    mask[0] = batch.support_y[0] != 3
    with pytest.raises(BayesMetaError, match="class 3 of task 0"):
        versa.adapt(SupportSet(batch.support_x, batch.support_y, mask, batch.n_way))


def test_empty_support_set_is_refused() -> None:
    batch = _reg_batch()
    reg = VERSA(Features(1, 8), task_kind="regression", hidden=16).double()
    with pytest.raises(BayesMetaError, match="support_x.*empty"):
        reg.adapt(SupportSet(batch.support_x[:, :0], batch.support_y[:, :0]))


def test_mask_hiding_every_support_point_is_refused() -> None:
    batch = _cls_batch()
    mask = torch.ones(batch.support_y.shape, dtype=torch.bool)
    mask[2] = False
    with pytest.raises(BayesMetaError, match="support_mask"):
        SupportSet(batch.support_x, batch.support_y, mask, batch.n_way)


def test_mismatched_dims_are_named() -> None:
    reg = VERSA(Features(1, 8), task_kind="regression", hidden=16).double()
    batch = _reg_batch()
    with pytest.raises(ShapeError, match="support_y"):
        reg.adapt(SupportSet(batch.support_x, torch.cat([batch.support_y] * 2, -1)))
    with pytest.raises(ShapeError, match="support_y"):
        # x and y with different numbers of points: refused by the container itself
        SupportSet(batch.support_x, batch.support_y[:, :-1])
    cls = VERSA(Features(6, 5)).double()
    with pytest.raises(ShapeError, match="classification learner"):
        cls.adapt(batch.support)
    post = cls.adapt(_cls_batch().support)
    with pytest.raises(ShapeError, match="query_x"):
        cls.predict(post, _cls_batch(t=2).query_x)
    with pytest.raises(ShapeError, match="feature_dim"):
        VERSA(Features(6, 5), feature_dim=7).double().adapt(_cls_batch().support)


def test_prototype_residual_amortization_starts_at_protonet_and_learns() -> None:
    """``"prototype_residual"``: at initialisation its head mean is ProtoNets' (w = 2c, b = -||c||^2)
    exactly and its predictive is ProtoNets' up to the tiny initial variance; the correction and
    log-variance networks get gradients from VERSA's loss, and one optimizer step moves the mean off
    the prototype head."""
    from bayesmeta.inference.protonet import ProtoNet
    from bayesmeta.models.amortization import PrototypeResidualAmortization

    torch.manual_seed(0)
    backbone = MLP(6, 1, hidden=(16, 8)).double()
    versa = VERSA(backbone, amortization="prototype_residual", n_samples=4).double()
    assert isinstance(versa.amortization, PrototypeResidualAmortization) and versa.variance
    proto = ProtoNet(backbone)
    batch = _cls_batch()

    post = versa.adapt(batch.support, generator=torch.Generator().manual_seed(0))
    f_s = backbone.features(batch.support_x)
    onehot = nn.functional.one_hot(batch.support_y, batch.n_way).to(F64)
    c = torch.einsum("tsc,tsd->tcd", onehot, f_s) / onehot.sum(1).unsqueeze(-1)
    torch.testing.assert_close(post.head.w_mean, 2 * c, rtol=0, atol=1e-12)
    torch.testing.assert_close(post.head.b_mean, -(c**2).sum(-1), rtol=0, atol=1e-12)
    assert post.head.w_logvar is not None and post.head.b_logvar is not None

    # The predictive: a mixture over sampled logits whose standard deviation starts at about
    # exp(-3) * |f(x)|; with these features (|f| ~ 1) the probabilities agree with ProtoNets' to
    # well within 0.05, and exactly when the variance is removed.
    pv = versa.predict(post, batch.query_x)
    pp = proto.predict(proto.adapt(batch.support), batch.query_x)
    torch.testing.assert_close(pv.probs, pp.probs, rtol=0, atol=0.05)
    point = VERSA(backbone, amortization="prototype_residual", variance=False).double()
    assert not point.variance
    pt = point.predict(point.adapt(batch.support), batch.query_x)
    torch.testing.assert_close(pt.sample_log_probs, pp.sample_log_probs, rtol=0, atol=1e-12)

    # Gradients reach the correction's output layer and the log-variance networks.
    amort = versa.amortization
    versa.meta_loss(batch).loss.backward()
    assert amort.weight_mean[-1].weight.grad is not None and amort.weight_mean[-1].weight.grad.abs().sum() > 0
    assert amort.bias_mean[-1].weight.grad is not None and amort.bias_mean[-1].weight.grad.abs().sum() > 0
    assert amort.weight_logvar is not None and amort.weight_logvar[-1].bias.grad.abs().sum() > 0
    torch.optim.SGD(versa.parameters(), lr=0.1).step()
    moved = versa.adapt(batch.support).head
    f_s = backbone.features(batch.support_x)
    c = torch.einsum("tsc,tsd->tcd", onehot, f_s) / onehot.sum(1).unsqueeze(-1)
    assert (moved.w_mean - 2 * c).abs().max() > 1e-6


def test_prototype_residual_amortization_is_built_from_a_config() -> None:
    from pathlib import Path

    from bayesmeta.config import build_learner, load_config

    path = Path(__file__).parents[2] / "benchmarks" / "configs" / "versa_omniglot_5w1s_groupnorm_residual.yaml"
    learner = build_learner(load_config(path))
    assert isinstance(learner, VERSA) and learner.variance
    assert type(learner.amortization).__name__ == "PrototypeResidualAmortization"


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(BayesMetaError, match="amortization"):
        VERSA(Features(6, 5), amortization="nonsense")
    with pytest.raises(BayesMetaError, match="amortization"):
        VERSA(Features(1, 5), task_kind="regression", amortization="prototype")
    with pytest.raises(BayesMetaError, match="prototype_residual"):
        VERSA(Features(1, 5), task_kind="regression", amortization="prototype_residual")
    with pytest.raises(BayesMetaError, match="n_samples"):
        VERSA(Features(6, 5), n_samples=0)
    with pytest.raises(BayesMetaError, match="task_kind"):
        VERSA(Features(6, 5), task_kind="ranking")  # type: ignore[arg-type]
