"""PLATIPUS: meta-gradient against a per-task loop, reduction of adapt to MAML, from_maml,
contracts, LinearGaussian behaviour and bad input."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from _linear_gaussian_eval import K_EVAL, lg_scores, lg_train
from torch.func import functional_call

from bayesmeta.exceptions import ConfigError, NumericalError, ShapeError
from bayesmeta.inference import MAML
from bayesmeta.inference.bmaml import ParticlePosterior
from bayesmeta.inference.platipus import PLATIPUS
from bayesmeta.inference.task_noise import task_keys, task_randn, task_seeds
from bayesmeta.models import MLP
from bayesmeta.predictive import CategoricalPredictive, GaussianPredictive
from bayesmeta.tasks import TaskBatch

F64 = torch.float64
RTOL = 1e-6


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Many small ops: one thread avoids oversubscription on a busy 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _sinusoid_batch(t: int = 4, s: int = 6, q: int = 5, seed: int = 0) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    x = lambda n: torch.rand(t, n, 1, generator=g, dtype=F64) * 10 - 5  # noqa: E731
    sx, qx = x(s), x(q)
    amp = torch.rand(t, 1, 1, generator=g, dtype=F64) * 4.9 + 0.1
    ph = torch.rand(t, 1, 1, generator=g, dtype=F64) * 3.14
    return TaskBatch(sx, amp * torch.sin(sx - ph), qx, amp * torch.sin(qx - ph))


def _rel_err(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    num = torch.sqrt(sum(((x - y) ** 2).sum() for x, y in zip(a, b, strict=True)))
    den = torch.sqrt(sum((y**2).sum() for y in b))
    return float(num / den)


# -------------------------------------------------------- meta-gradient vs a per-task loop
def _reference_loss(learner: PLATIPUS, batch: TaskBatch, eps: dict[str, torch.Tensor]) -> torch.Tensor:
    """Algorithm 1 of the paper written per task with torch.autograd.grad(create_graph=True)."""
    model = learner.model
    names = [n for n, _ in model.named_parameters()]
    mu = [p for _, p in model.named_parameters()]
    key = lambda n: n.replace(".", "__")  # noqa: E731
    gp = [learner.gamma_p[key(n)] for n in names]
    gq = [learner.gamma_q[key(n)] for n in names]
    lvq = [learner.q_log_var[key(n)] for n in names]
    lvp = [learner.prior.log_var[key(n)] for n in names]

    def mse(params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((functional_call(model, dict(zip(names, params, strict=True)), (x,)) - y) ** 2).mean()

    def step(params: list[torch.Tensor], lrs: list[torch.Tensor] | float, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        g = torch.autograd.grad(mse(params, x, y), params, create_graph=True)
        lr = lrs if isinstance(lrs, list) else [lrs] * len(params)
        return [p - a * gi for p, a, gi in zip(params, lr, g, strict=True)]

    qloss, kl = torch.zeros((), dtype=F64), torch.zeros((), dtype=F64)
    t_count = batch.n_tasks
    for t in range(t_count):
        sx, sy = batch.support_x[t], batch.support_y[t]
        jx, jy = torch.cat([sx, batch.query_x[t]]), torch.cat([sy, batch.query_y[t]])
        mu_p = step(mu, gp, sx, sy)
        mu_q = step(mu, gq, jx, jy)
        draws = eps[names[0]].shape[1]
        for j in range(draws):
            phi = [m + (0.5 * lv).exp() * eps[n][t, j] for m, lv, n in zip(mu_q, lvq, names, strict=True)]
            for _ in range(learner.inner_steps):
                phi = step(phi, learner.inner_lr, sx, sy)
            qloss = qloss + mse(phi, batch.query_x[t], batch.query_y[t]) / draws
        for a, b, la, lb in zip(mu_q, mu_p, lvq, lvp, strict=True):
            qd = torch.distributions.Normal(a, (0.5 * la).exp())
            pd = torch.distributions.Normal(b, (0.5 * lb).exp())
            kl = kl + torch.distributions.kl_divergence(qd, pd).sum()
    return qloss / t_count + learner.kl_weight * kl / t_count


@pytest.mark.parametrize("train_samples", [1, 3])
def test_meta_gradient_matches_per_task_autograd_loop(train_samples: int) -> None:
    torch.manual_seed(0)
    model = MLP(1, 1, hidden=(10,)).double()
    learner = PLATIPUS(model, inner_lr=0.03, inner_steps=2, kl_weight=0.1, train_samples=train_samples,
                       prior_init_std=0.2, q_init_std=0.1, gamma_init=0.02, noise=1.0, task_kind="regression")
    with torch.no_grad():  # distinct values so that a swapped gamma or variance would show
        for d, scale in ((learner.gamma_p, 0.5), (learner.gamma_q, 1.5), (learner.q_log_var, 1.0)):
            for v in d.values():
                v.mul_(1 + scale * torch.rand_like(v))
    batch = _sinusoid_batch(t=3)
    params = list(learner.parameters())
    torch.manual_seed(11)
    ours = torch.autograd.grad(learner.meta_loss(batch).loss, params)
    torch.manual_seed(11)  # meta_loss draws eps per task (task_noise), per parameter in named_parameters order
    seeds = task_seeds(task_keys(batch.support_x, batch.support_y, batch.support_mask))
    names = [n for n, _ in model.named_parameters()]
    draws = task_randn(seeds, [(train_samples, *p.shape) for _, p in model.named_parameters()], F64, "cpu")
    eps = dict(zip(names, draws))  # {name: [T, train_samples, *shape]}
    ref = torch.autograd.grad(_reference_loss(learner, batch, eps), params)
    assert _rel_err(list(ours), list(ref)) < RTOL


def test_kl_matches_torch_distributions() -> None:
    torch.manual_seed(1)
    learner = PLATIPUS(MLP(1, 1, hidden=(3,)).double(), prior_init_std=0.3, q_init_std=0.7, task_kind="regression")
    mu_q = {n: torch.randn(2, *p.shape, dtype=F64) for n, p in learner.model.named_parameters()}
    mu_p = {n: torch.randn(2, *p.shape, dtype=F64) for n, p in learner.model.named_parameters()}
    ref = sum(
        torch.distributions.kl_divergence(
            torch.distributions.Normal(mu_q[n], torch.full_like(mu_q[n], 0.7)),
            torch.distributions.Normal(mu_p[n], torch.full_like(mu_p[n], 0.3)),
        ).flatten(1).sum(1)
        for n in mu_q
    )
    torch.testing.assert_close(learner.kl_divergence(mu_q, mu_p), ref)


def test_adapt_without_prior_spread_is_maml_with_one_more_step() -> None:
    """sigma_theta -> 0 and gamma_p = alpha: a gamma_p step then K steps = MAML with K + 1 steps."""
    torch.manual_seed(2)
    model = MLP(1, 1, hidden=(16,)).double()
    batch = _sinusoid_batch()
    plat = PLATIPUS(model, inner_lr=0.02, inner_steps=3, n_samples=4, prior_init_std=1e-12, task_kind="regression")
    maml = MAML(model, inner_lr=0.02, inner_steps=4, task_kind="regression")
    a = plat.adapt(batch.support).params
    b = maml.adapt(batch.support).params
    for k in b:
        for m in range(4):
            torch.testing.assert_close(a[k][:, m], b[k], rtol=1e-9, atol=1e-9)


def test_from_maml_copies_and_detaches() -> None:
    torch.manual_seed(3)
    maml = MAML(MLP(1, 1, hidden=(8,)).double(), inner_lr=0.05, inner_steps=3, task_kind="regression")
    with torch.no_grad():
        maml.log_noise.fill_(math.log(0.37))
    plat = PLATIPUS.from_maml(maml, n_samples=7, kl_weight=0.5)
    assert (plat.inner_lr, plat.inner_steps, plat.n_samples, plat.kl_weight) == (0.05, 3, 7, 0.5)
    assert plat.task_kind == "regression"
    assert math.isclose(float(plat.log_noise.detach().exp()), 0.37, rel_tol=1e-6)
    for (n, p), (_, q) in zip(plat.model.named_parameters(), maml.model.named_parameters(), strict=True):
        assert torch.equal(p, q) and p is not q, n
    assert float(plat.gamma_p["head__weight"].detach().flatten()[0]) == 0.05
    with torch.no_grad():
        next(plat.model.parameters()).add_(1.0)
    assert not torch.equal(next(plat.model.parameters()), next(maml.model.parameters()))
    with pytest.raises(ConfigError, match="unknown"):
        PLATIPUS.from_maml(maml, n_particles=3)
    with pytest.raises(ConfigError, match="MAML"):
        PLATIPUS.from_maml(plat)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ contracts
def test_shapes_regression_and_classification() -> None:
    torch.manual_seed(4)
    batch = _sinusoid_batch()
    learner = PLATIPUS(MLP(1, 1, hidden=(16,)).double(), n_samples=6, prior_init_std=0.1, task_kind="regression")
    post = learner.adapt(batch.support)
    assert isinstance(post, ParticlePosterior) and post.n_particles == 6 and post.n_tasks == 4
    pred = learner.predict(post, batch.query_x)
    assert isinstance(pred, GaussianPredictive) and pred.sample_mean.shape == (6, 4, 5, 1)
    assert bool((pred.epistemic_variance > 0).all())

    g = torch.Generator().manual_seed(0)
    cls = TaskBatch(torch.randn(2, 6, 4, generator=g), torch.arange(3).repeat(2, 2),
                    torch.randn(2, 3, 4, generator=g), torch.arange(3).repeat(2, 1), n_way=3)
    c = PLATIPUS(MLP(4, 3, hidden=(8,)), n_samples=2, task_kind="classification")
    out = c.meta_loss(cls)
    # loss = query cross-entropy + kl_weight * KL, and accuracy is a proportion of T * Q = 6 hits
    assert float(out.loss) == pytest.approx(out.metrics["query_loss"] + c.kl_weight * out.metrics["kl"], rel=1e-6)
    assert out.metrics["kl"] >= 0 and out.metrics["accuracy"] * 6 == pytest.approx(round(out.metrics["accuracy"] * 6), abs=1e-6)
    p = c.predict(c.adapt(cls.support), cls.query_x)
    assert isinstance(p, CategoricalPredictive) and p.sample_probs.shape == (2, 2, 3, 3)


def test_adapt_is_pure_and_seeded() -> None:
    torch.manual_seed(5)
    learner = PLATIPUS(MLP(1, 1, hidden=(8,)).double(), task_kind="regression")
    batch = _sinusoid_batch()
    before = {k: v.clone() for k, v in learner.state_dict().items()}
    a = learner.adapt(batch.support, generator=torch.Generator().manual_seed(1))
    b = learner.adapt(batch.support, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(before[k], v) for k, v in learner.state_dict().items())
    assert all(p.grad is None for p in learner.parameters())
    assert all(torch.equal(a.params[k], b.params[k]) for k in a.params)


def test_gradients_reach_every_meta_parameter() -> None:
    torch.manual_seed(6)
    learner = PLATIPUS(MLP(1, 1, hidden=(8,)).double(), kl_weight=0.1, task_kind="regression")
    learner.meta_loss(_sinusoid_batch()).loss.backward()
    names = {n for n, _ in learner.named_parameters()}
    assert any(n.startswith("gamma_p") for n in names) and any(n.startswith("prior.log_var") for n in names)
    for name, p in learner.named_parameters():
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), name


# ------------------------------------------------------------------ LinearGaussian behaviour
@pytest.fixture(scope="module")
def lg_trained() -> dict[str, dict[int, dict[str, float]]]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # module-scoped: set here too
    try:
        torch.manual_seed(0)
        # every learner gets the true noise std, so that only the posterior over w differs
        maml = MAML(MLP(1, 1, hidden=()).double(), inner_lr=0.15, inner_steps=5, task_kind="regression", noise=0.3)
        lg_train(maml, 150)
        plat = PLATIPUS.from_maml(maml, n_samples=10, prior_init_std=1.0, kl_weight=0.02)
        lg_train(plat, 150, seed=1)
        return {"maml": lg_scores(maml), "platipus": lg_scores(plat, seeded_adapt=True)}
    finally:
        torch.set_num_threads(n)


def test_linear_gaussian_variance_shrinks_with_support(lg_trained: dict) -> None:
    v = [lg_trained["platipus"][k]["var"] for k in K_EVAL]
    assert all(a > b for a, b in zip(v, v[1:], strict=False)), v
    assert v[0] > 2 * v[-1], v


def test_linear_gaussian_closer_to_exact_than_maml(lg_trained: dict) -> None:
    mean = lambda name, key: sum(lg_trained[name][k][key] for k in K_EVAL) / len(K_EVAL)  # noqa: E731
    assert mean("platipus", "kl") < 0.5 * mean("maml", "kl"), lg_trained
    assert mean("platipus", "w2") < mean("maml", "w2"), lg_trained


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"n_samples": 0}, "n_samples"),
        ({"train_samples": 0}, "train_samples"),
        ({"kl_weight": -1.0}, "kl_weight"),
        ({"prior_init_std": 0.0}, "prior_init_std"),
        ({"q_init_std": -1.0}, "q_init_std"),
        ({"gamma_init": float("nan")}, "gamma_init"),
        ({"inner_steps": -1}, "inner_steps"),
        ({"noise": "fixed"}, "noise"),
    ],
)
def test_bad_options_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        PLATIPUS(MLP(1, 1, hidden=(4,)), **kwargs)


def test_nan_parameters_raise_a_library_error() -> None:
    learner = PLATIPUS(MLP(1, 1, hidden=(4,)).double(), task_kind="regression")
    with torch.no_grad():
        learner.prior.log_var["head__bias"].fill_(float("nan"))
    batch = _sinusoid_batch(t=2)
    with pytest.raises(NumericalError, match="particles"):
        learner.adapt(batch.support)
    with pytest.raises(ShapeError, match="query_x"):
        ok = PLATIPUS(MLP(1, 1, hidden=(4,)).double(), task_kind="regression")
        ok.predict(ok.adapt(batch.support), torch.zeros(5, 2, 1, dtype=F64))


def test_trainer_and_evaluation_run() -> None:
    from bayesmeta.evaluation import evaluate
    from bayesmeta.tasks import Sinusoid, fixed_episodes
    from bayesmeta.training import MetaTrainer

    source = Sinusoid(k_shot=5, n_query=5)
    torch.manual_seed(9)
    learner = PLATIPUS(MLP(1, 1, hidden=(8,)), n_samples=3, task_kind="regression")
    assert MetaTrainer(learner, source, steps=3, meta_batch_size=4, seed=0, progress=False).fit().steps == 3
    ev = evaluate(learner, fixed_episodes(source, 2, seed=1, tasks_per_batch=3), progress=False)
    assert {"mse", "nll", "pit_error", "coverage_90"} <= set(ev.summary)
