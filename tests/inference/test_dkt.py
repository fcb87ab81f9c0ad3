"""DKT: exact GP formulas, batching, purity, gradients, numerical robustness and bad input."""

from __future__ import annotations

import copy
import inspect
import math
import warnings

import pytest
import torch
from torch import nn

from bayesmeta.exceptions import (
    BayesMetaError,
    ConfigError,
    InvalidValueError,
    NumericalError,
    ShapeError,
)
from bayesmeta.inference.dkt import (
    DKT,
    CholeskyJitterWarning,
    DKTPosterior,
    max_class_probs,
    robust_cholesky,
)
from bayesmeta.models import MLP
from bayesmeta.predictive import CategoricalPredictive, GaussianPredictive
from bayesmeta.tasks import SupportSet, TaskBatch

TOL = 1e-6  # the tolerance (float64)


# ----------------------------------------------------------------------------- fixtures
def _sine_batch(t: int = 4, s: int = 6, q: int = 9, dy: int = 1, seed: int = 0,
                dtype: torch.dtype = torch.float64) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    x = lambda n: torch.rand(t, n, 1, generator=g, dtype=dtype) * 10 - 5  # noqa: E731
    sx, qx = x(s), x(q)
    amp = torch.rand(t, 1, dy, generator=g, dtype=dtype) * 4.9 + 0.1
    ph = torch.rand(t, 1, dy, generator=g, dtype=dtype) * 3.14
    noise = lambda n: 0.1 * torch.randn(t, n, dy, generator=g, dtype=dtype)  # noqa: E731
    return TaskBatch(sx, amp * torch.sin(sx + ph) + noise(s), qx, amp * torch.sin(qx + ph) + noise(q))


def _cls_batch(t: int = 3, n_way: int = 4, shot: int = 2, q_per: int = 3, dim: int = 5, seed: int = 0) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(t, n_way, 1, dim, generator=g, dtype=torch.float64) * 2
    sx = (centers + torch.randn(t, n_way, shot, dim, generator=g, dtype=torch.float64)).reshape(t, -1, dim)
    qx = (centers + torch.randn(t, n_way, q_per, dim, generator=g, dtype=torch.float64)).reshape(t, -1, dim)
    sy = torch.arange(n_way).repeat_interleave(shot).repeat(t, 1)
    qy = torch.arange(n_way).repeat_interleave(q_per).repeat(t, 1)
    return TaskBatch(sx, sy, qx, qy, n_way=n_way)


def _learner(kernel: str = "rbf", in_features: int = 1, seed: int = 0, **kw: object) -> DKT:
    import gpytorch
    torch.manual_seed(seed)
    dkt = DKT(MLP(in_features, 1, hidden=(16, 8)), kernel=kernel, **kw).double()  # type: ignore[arg-type]
    # move hyperparameters away from their initial values so the formulas are exercised generally
    with torch.no_grad():
        dkt.likelihood.noise = torch.tensor(0.07, dtype=torch.float64)
        if isinstance(dkt.mean_module, gpytorch.means.ConstantMean):
            dkt.mean_module.constant.fill_(0.3)
        if kernel == "rbf":
            dkt.deep_kernel.base_kernel.outputscale = torch.tensor(1.7, dtype=torch.float64)
            dkt.deep_kernel.base_kernel.base_kernel.lengthscale = torch.tensor([[1.3]], dtype=torch.float64)
    return dkt


# ------------------------------------------------------- independent, hand-written GP math
def _hand_kernel(dkt: DKT, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """k(z1, z2) for one task written from the kernels' definitions, ``[N, F], [M, F] -> [N, M]``."""
    k = dkt.deep_kernel.base_kernel
    diff = z1[:, None, :] - z2[None, :, :]  # [N, M, F]
    if dkt.kernel_name == "rbf":
        ls = k.base_kernel.lengthscale.reshape(-1)
        return k.outputscale * torch.exp(-0.5 * ((diff / ls) ** 2).sum(-1))
    # GPyTorch's multi-dimensional spectral mixture is a product over feature dimensions of
    # one-dimensional mixtures that share the weights:
    #   k(z, z') = prod_d sum_q w_q exp(-2 pi^2 s_qd^2 diff_d^2) cos(2 pi mu_qd diff_d)
    w = k.mixture_weights  # [Qm]
    mu = k.mixture_means.reshape(len(w), -1)  # [Qm, F]
    sc = k.mixture_scales.reshape(len(w), -1)
    per_dim = torch.zeros(diff.shape, dtype=diff.dtype)
    for q in range(len(w)):
        per_dim = per_dim + w[q] * torch.exp(-2 * math.pi**2 * diff**2 * sc[q] ** 2) * torch.cos(2 * math.pi * diff * mu[q])
    return per_dim.prod(-1)


def _hand_gp(dkt: DKT, xs: torch.Tensor, ys: torch.Tensor, xq: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Exact GP predictive and log marginal for ONE task via an explicit Cholesky solve."""
    import gpytorch
    zs, zq = dkt.backbone.features(xs), dkt.backbone.features(xq)
    c = dkt.mean_module.constant if isinstance(dkt.mean_module, gpytorch.means.ConstantMean) else 0.0
    noise = dkt.likelihood.noise.reshape(())
    kss = _hand_kernel(dkt, zs, zs) + noise * torch.eye(len(zs), dtype=zs.dtype)
    kqs = _hand_kernel(dkt, zq, zs)
    kqq = _hand_kernel(dkt, zq, zq).diagonal()
    L = torch.linalg.cholesky(kss)
    r = ys - c  # [S, D]
    alpha = torch.cholesky_solve(r, L)
    mean = c + kqs @ alpha
    v = torch.linalg.solve_triangular(L, kqs.T, upper=False)
    var = kqq - (v**2).sum(0) + noise
    # closed form with a general solver and slogdet (not the Cholesky) for independence
    n, d = ys.shape
    _, logdet = torch.linalg.slogdet(kss)
    quad = (r * torch.linalg.solve(kss, r)).sum()
    mll = -0.5 * quad - 0.5 * d * logdet - 0.5 * d * n * math.log(2 * math.pi)
    return mean, var, mll


def _snapshot(module: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, tuple[str, ...]]]:
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    attrs = {name: tuple(sorted(vars(m))) for name, m in module.named_modules()}
    return state, attrs


# ---------------------------------------------------------------------- exact GP formulas
@pytest.mark.parametrize("kernel", ["rbf", "spectral"])
def test_predictive_equals_hand_written_cholesky_solve(kernel: str) -> None:
    dkt = _learner(kernel)
    batch = _sine_batch()
    with torch.no_grad():
        post = dkt.adapt(batch.support)
        pred = dkt.predict(post, batch.query_x)
        assert isinstance(pred, GaussianPredictive)
        assert pred.sample_mean.shape == (1, 4, 9, 1) and pred.sample_variance.shape == (1, 4, 9, 1)
        for t in range(batch.n_tasks):
            mean, var, mll = _hand_gp(dkt, batch.support_x[t], batch.support_y[t], batch.query_x[t])
            torch.testing.assert_close(pred.sample_mean[0, t], mean, rtol=TOL, atol=TOL)
            torch.testing.assert_close(pred.sample_variance[0, t, :, 0], var, rtol=TOL, atol=TOL)
            torch.testing.assert_close(post.log_marginal[t], mll, rtol=TOL, atol=TOL)


@pytest.mark.parametrize("kernel", ["rbf", "spectral"])
def test_meta_loss_is_negative_mean_closed_form_mll_per_point(kernel: str) -> None:
    dkt = _learner(kernel)
    batch = _sine_batch()
    with torch.no_grad():
        out = dkt.meta_loss(batch)
        joint = batch.joint()
        n = joint.x.shape[1]
        mlls = [_hand_gp(dkt, joint.x[t], joint.y[t], joint.x[t][:1])[2] / n for t in range(batch.n_tasks)]
    torch.testing.assert_close(out.loss, -torch.stack(mlls).mean(), rtol=TOL, atol=TOL)
    assert out.metrics["jitter"] == 0.0
    # the mse diagnostic is the query error of the support-conditioned GP mean, by hand
    with torch.no_grad():
        hand = torch.stack([
            ((_hand_gp(dkt, batch.support_x[t], batch.support_y[t], batch.query_x[t])[0] - batch.query_y[t]) ** 2).mean()
            for t in range(batch.n_tasks)
        ]).mean()
    assert out.metrics["mse"] == pytest.approx(float(hand), rel=1e-9)


def test_matches_gpytorch_exact_gp_for_one_task() -> None:
    """A second, independent reference: GPyTorch's own ExactGP with the same hyperparameters."""
    import gpytorch
    dkt = _learner("rbf")
    batch = _sine_batch(t=1)
    zs = dkt.backbone.features(batch.support_x[0]).detach()
    zq = dkt.backbone.features(batch.query_x[0]).detach()

    class _GP(gpytorch.models.ExactGP):
        def __init__(self) -> None:
            lik = copy.deepcopy(dkt.likelihood)
            super().__init__(zs, batch.support_y[0, :, 0], lik)
            self.mean_module = copy.deepcopy(dkt.mean_module)
            self.covar_module = copy.deepcopy(dkt.deep_kernel.base_kernel)

        def forward(self, z: torch.Tensor) -> gpytorch.distributions.MultivariateNormal:
            return gpytorch.distributions.MultivariateNormal(self.mean_module(z), self.covar_module(z))

    gp = _GP()
    gp.train()
    mll_ref = gpytorch.mlls.ExactMarginalLogLikelihood(gp.likelihood, gp)(gp(zs), batch.support_y[0, :, 0])
    gp.eval()
    with torch.no_grad(), gpytorch.settings.fast_computations(False, False, False):
        ref = gp.likelihood(gp(zq))
        post = dkt.adapt(batch.support)
        pred = dkt.predict(post, batch.query_x)
    torch.testing.assert_close(pred.sample_mean[0, 0, :, 0], ref.mean, rtol=TOL, atol=TOL)
    torch.testing.assert_close(pred.sample_variance[0, 0, :, 0], ref.variance, rtol=TOL, atol=TOL)
    torch.testing.assert_close(post.log_marginal[0] / zs.shape[0], mll_ref.detach(), rtol=TOL, atol=TOL)


# -------------------------------------------------------------------------------- batching
@pytest.mark.parametrize("kernel", ["rbf", "spectral"])
def test_batch_equals_one_task_at_a_time(kernel: str) -> None:
    dkt = _learner(kernel)
    batch = _sine_batch(t=5)
    with torch.no_grad():
        pred = dkt(batch)
        post = dkt.adapt(batch.support)
        for t in range(batch.n_tasks):
            one = batch.index(t)
            p1 = dkt(one)
            torch.testing.assert_close(pred.sample_mean[:, t], p1.sample_mean[:, 0], rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(pred.sample_variance[:, t], p1.sample_variance[:, 0], rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(post.log_marginal[t], dkt.adapt(one.support).log_marginal[0])


def test_padding_mask_equals_unpadded_tasks() -> None:
    """Ragged tasks padded to one size give exactly the results of the unpadded tasks."""
    dkt = _learner("rbf")
    full = _sine_batch(t=3, s=7, q=5)
    lengths = [7, 4, 2]
    smask = torch.zeros(3, 7, dtype=torch.bool)
    for t, n in enumerate(lengths):
        smask[t, :n] = True
    qmask = torch.ones(3, 5, dtype=torch.bool)
    qmask[1, 3:] = False
    # garbage in the padding must not matter
    sx = torch.where(smask[..., None], full.support_x, torch.full_like(full.support_x, 123.0))
    sy = torch.where(smask[..., None], full.support_y, torch.full_like(full.support_y, -50.0))
    padded = TaskBatch(sx, sy, full.query_x, full.query_y, support_mask=smask, query_mask=qmask)
    with torch.no_grad():
        pred = dkt(padded)
        post = dkt.adapt(padded.support)
        loss = dkt.meta_loss(padded).loss
        losses = []
        for t, n in enumerate(lengths):
            nq = int(qmask[t].sum())
            one = TaskBatch(full.support_x[t:t + 1, :n], full.support_y[t:t + 1, :n],
                            full.query_x[t:t + 1, :nq], full.query_y[t:t + 1, :nq])
            p1 = dkt(one)
            torch.testing.assert_close(pred.sample_mean[:, t, :nq], p1.sample_mean[:, 0], rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(pred.sample_variance[:, t, :nq], p1.sample_variance[:, 0], rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(post.log_marginal[t], dkt.adapt(one.support).log_marginal[0])
            losses.append(dkt.meta_loss(one).loss)
    torch.testing.assert_close(loss, torch.stack(losses).mean(), rtol=1e-10, atol=1e-10)


def test_multi_output_is_independent_gps_sharing_the_kernel() -> None:
    dkt = _learner("rbf")
    b2 = _sine_batch(dy=2)
    with torch.no_grad():
        p2 = dkt(b2)
        lm2 = dkt.adapt(b2.support).log_marginal
        lm = 0.0
        for d in range(2):
            bd = TaskBatch(b2.support_x, b2.support_y[..., d:d + 1], b2.query_x, b2.query_y[..., d:d + 1])
            pd = dkt(bd)
            torch.testing.assert_close(p2.sample_mean[..., d:d + 1], pd.sample_mean)
            torch.testing.assert_close(p2.sample_variance[..., d:d + 1], pd.sample_variance)
            lm = lm + dkt.adapt(bd.support).log_marginal
    torch.testing.assert_close(lm2, lm)


# ----------------------------------------------------------------- purity and gradients
def test_adapt_and_predict_are_pure() -> None:
    dkt = _learner("spectral")
    batch = _sine_batch()
    before = _snapshot(dkt)
    post = dkt.adapt(batch.support)
    dkt.predict(post, batch.query_x)
    after = _snapshot(dkt)
    assert before[1] == after[1], "adapt/predict added or removed module attributes"
    for k, v in before[0].items():
        assert torch.equal(v, after[0][k]), k
    # no GPyTorch train data stored anywhere on the learner
    assert not any(hasattr(m, "train_inputs") for m in dkt.modules())
    assert isinstance(post, DKTPosterior) and post.n_tasks == 4


@pytest.mark.parametrize("kernel", ["rbf", "spectral"])
def test_gradients_reach_backbone_kernel_mean_and_noise(kernel: str) -> None:
    dkt = _learner(kernel)
    dkt.meta_loss(_sine_batch()).loss.backward()
    names = {n for n, p in dkt.named_parameters() if p.requires_grad}
    assert any(n.startswith("deep_kernel.feature_extractor.body") for n in names)
    assert any("raw_noise" in n for n in names) and any("mean_module" in n for n in names)
    for n, p in dkt.named_parameters():
        if n.startswith("deep_kernel.feature_extractor.head"):
            assert p.grad is None, "the backbone's head is not part of the deep kernel"
            continue
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), n
        assert float(p.grad.abs().max()) > 0, n


def test_fixed_noise_gets_no_gradient() -> None:
    dkt = DKT(MLP(1, 1), learn_noise=False).double()
    dkt.meta_loss(_sine_batch()).loss.backward()
    assert dkt.likelihood.noise_covar.raw_noise.grad is None
    assert abs(float(dkt.noise) - 0.1) < 1e-6


# ----------------------------------------------------------------- numerical robustness
def test_duplicate_support_inputs_warn_and_stay_finite() -> None:
    torch.manual_seed(0)
    dkt = DKT(MLP(1, 1, hidden=(16,)), noise_init=1e-9, min_noise=1e-12)  # float32
    x = torch.tensor([-1.0, 0.5, 2.0]).repeat_interleave(3).reshape(1, 9, 1)  # each input 3 times
    y = torch.sin(x)
    qx = torch.linspace(-3, 3, 7).reshape(1, 7, 1)
    with pytest.warns(CholeskyJitterWarning, match="jitter"):
        post = dkt.adapt(SupportSet(x, y))
    assert float(post.jitter[0]) > 0
    pred = dkt.predict(post, qx)
    assert bool(torch.isfinite(pred.mean).all()) and bool((pred.variance > 0).all())


def test_robust_cholesky_jitters_only_failed_matrices_and_gives_up_cleanly() -> None:
    good = torch.eye(3, dtype=torch.float64) * 2
    singular = torch.ones(3, 3, dtype=torch.float64)  # rank one
    with pytest.warns(CholeskyJitterWarning):
        chol, jitter = robust_cholesky(torch.stack([good, singular]))
    assert float(jitter[0]) == 0.0 and float(jitter[1]) > 0
    torch.testing.assert_close(chol[0], torch.linalg.cholesky(good))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning when nothing failed
        robust_cholesky(good.unsqueeze(0))
    with pytest.raises(NumericalError, match="jitter"):
        robust_cholesky(-torch.eye(3).unsqueeze(0))
    with pytest.raises(NumericalError, match="NaN"):
        robust_cholesky(torch.full((1, 2, 2), float("nan")))


# ---------------------------------------------------------------------------- bad input
def test_nan_targets_and_inputs_are_named() -> None:
    dkt = _learner()
    batch = _sine_batch()
    support = batch.support
    support.y[0, 2, 0] = float("nan")  # edited in place after the SupportSet validated itself
    with pytest.raises(InvalidValueError, match=r"support\.y"):
        dkt.adapt(support)
    post = dkt.adapt(_sine_batch().support)
    qx = batch.query_x.clone()
    qx[1, 0, 0] = float("nan")
    with pytest.raises(InvalidValueError, match="query_x"):
        dkt.predict(post, qx)


def test_nan_features_raise_numerical_error() -> None:
    class _Bad(nn.Module):
        feature_dim = 1

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * float("nan")

    dkt = DKT(_Bad()).double()
    with pytest.raises(NumericalError, match="features"):
        dkt.adapt(_sine_batch().support)


def test_mismatched_dims_raise_shape_error() -> None:
    dkt = _learner()
    batch = _sine_batch()
    post = dkt.adapt(batch.support)
    with pytest.raises(ShapeError, match="query_x"):
        dkt.predict(post, torch.zeros(4, 5, 2, dtype=torch.float64))  # 2 input dims, support has 1
    with pytest.raises(ShapeError, match="query_x"):
        dkt.predict(post, torch.zeros(3, 5, 1, dtype=torch.float64))  # T mismatch
    with pytest.raises(ShapeError, match="query_x"):
        dkt.predict(post, torch.zeros(4, 5, dtype=torch.float64))  # missing point axis
    with pytest.raises(ShapeError, match="feature_dim"):
        DKT(MLP(1, 1, hidden=(8,)), feature_dim=5).double().adapt(batch.support)
    with pytest.raises(ShapeError, match="regression"):
        _learner(task_kind="regression").adapt(_cls_batch().support)
    with pytest.raises(InvalidValueError, match="dtype"):
        dkt.adapt(_sine_batch(dtype=torch.float32).support)
    with pytest.raises(ShapeError, match="TaskBatch"):
        dkt.meta_loss(batch.support)  # type: ignore[arg-type]


def test_bad_options_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="kernel"):
        DKT(MLP(1, 1), kernel="matern")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="feature_dim"):
        DKT(nn.Linear(1, 3))
    with pytest.raises(ConfigError, match="noise_init"):
        DKT(MLP(1, 1), noise_init=0.0)
    with pytest.raises(BayesMetaError):
        DKT(MLP(1, 1), task_kind="regression", n_way=5)
    params = set(inspect.signature(DKT.__init__).parameters)
    assert set(DKT.config_keys) <= params


# --------------------------------------------------------------------------- classification
@pytest.mark.parametrize("class_probs", ["max", "max_noisy", "softmax"])
def test_classification_probabilities(class_probs: str) -> None:
    torch.manual_seed(0)
    dkt = DKT(MLP(5, 1, hidden=(16,)), task_kind="classification", n_way=4, class_probs=class_probs).double()  # type: ignore[arg-type]
    batch = _cls_batch()
    out = dkt.meta_loss(batch)
    out.loss.backward()
    # a proportion of hits over the T * Q query points (finite: a NaN would pass a 0..1 check)
    n_q = batch.query_y.numel()
    assert out.metrics["accuracy"] * n_q == pytest.approx(round(out.metrics["accuracy"] * n_q), abs=1e-9)
    # the loss is the marginal likelihood plus the learned temperature's query NLL term
    assert out.metrics["mll"] - out.metrics["query_nll"] == pytest.approx(-float(out.loss.detach()), rel=1e-12)
    with torch.no_grad():
        post = dkt.adapt(batch.support)
        pred = dkt.predict(post, batch.query_x)
        latent = dkt.predict_latent(post, batch.query_x)
    assert isinstance(pred, CategoricalPredictive)
    assert pred.sample_probs.shape == (1, 3, 12, 4)
    torch.testing.assert_close(pred.probs.sum(-1), torch.ones(3, 12, dtype=torch.float64))
    # the decision rule is the paper's: argmax of the one-vs-rest predictive means
    assert torch.equal(pred.predicted, latent.mean.argmax(-1))
    assert latent.sample_mean.shape == (1, 3, 12, 4)


def test_task_kind_none_takes_the_kind_from_the_batch() -> None:
    torch.manual_seed(0)
    dkt = DKT(MLP(5, 1, hidden=(16,))).double()
    assert isinstance(dkt(_cls_batch()), CategoricalPredictive)
    batch = _sine_batch()
    reg = TaskBatch(batch.support_x.expand(-1, -1, 5).contiguous(), batch.support_y,
                    batch.query_x.expand(-1, -1, 5).contiguous(), batch.query_y)
    assert isinstance(dkt(reg), GaussianPredictive)


def test_one_vs_rest_gps_are_regressions_on_pm_one_targets() -> None:
    torch.manual_seed(0)
    dkt = DKT(MLP(5, 1, hidden=(16,)), task_kind="classification").double()
    batch = _cls_batch()
    reg = DKT(MLP(5, 1, hidden=(16,)), task_kind="regression").double()
    # the class temperature has no regression counterpart (it acts after the GPs)
    reg.load_state_dict({k: v for k, v in dkt.state_dict().items() if k != "log_temperature"})
    with torch.no_grad():
        latent = dkt.predict_latent(dkt.adapt(batch.support), batch.query_x)
        for c in range(4):
            y = (2.0 * (batch.support_y == c).double() - 1.0).unsqueeze(-1)
            r = reg.predict_latent(reg.adapt(SupportSet(batch.support_x, y)), batch.query_x)
            torch.testing.assert_close(latent.sample_mean[..., c], r.sample_mean[..., 0])


def test_max_class_probs_against_closed_form_and_monte_carlo() -> None:
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(6, 2, generator=g, dtype=torch.float64)
    var = torch.rand(6, generator=g, dtype=torch.float64) + 0.1
    # two classes: P(y_1 > y_0) = Phi((mu_1 - mu_0) / sqrt(2 var)) exactly
    p1 = torch.special.ndtr((mean[:, 1] - mean[:, 0]) / (2 * var).sqrt())
    torch.testing.assert_close(max_class_probs(mean, var).exp()[:, 1], p1, rtol=TOL, atol=TOL)
    # five classes against sampling
    mean = torch.randn(3, 5, generator=g, dtype=torch.float64)
    var = torch.rand(3, generator=g, dtype=torch.float64) + 0.2
    draws = mean + var.sqrt()[:, None] * torch.randn(200_000, 3, 5, generator=g, dtype=torch.float64)
    mc = nn.functional.one_hot(draws.argmax(-1), 5).double().mean(0)
    torch.testing.assert_close(max_class_probs(mean, var).exp(), mc, rtol=0, atol=5e-3)


def test_latent_max_probs_are_finite_at_support_points_and_sharper_than_noisy() -> None:
    torch.manual_seed(0)
    dkt = DKT(MLP(5, 1, hidden=(16,)), task_kind="classification", class_probs="max").double()
    batch = _cls_batch()
    with torch.no_grad():
        post = dkt.adapt(batch.support)
        at_support = dkt.predict(post, batch.support_x)  # latent variance ~ 0 here
        assert bool(torch.isfinite(at_support.log_probs).all())
        assert torch.equal(at_support.predicted, batch.support_y)
        sharp = dkt.predict(post, batch.query_x).confidence
        dkt.class_probs = "max_noisy"
        soft = dkt.predict(post, batch.query_x).confidence
    assert bool((sharp >= soft - 1e-12).all()) and bool((sharp > soft).any())
