"""BMAML: the MAML reduction, the batched SVGD meta-gradient against a per-task loop, contracts,
LinearGaussian behaviour and bad input."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from _linear_gaussian_eval import K_EVAL, lg_scores, lg_train
from torch.func import functional_call

from bayesmeta.exceptions import ConfigError, NumericalError, ShapeError
from bayesmeta.inference import MAML
from bayesmeta.inference.bmaml import BMAML, ParticlePosterior
from bayesmeta.inference.task_noise import task_keys, task_seeds
from bayesmeta.models import MLP
from bayesmeta.predictive import CategoricalPredictive, GaussianPredictive
from bayesmeta.priors import DiagonalGaussianPrior
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


def _sinusoid_batch(t: int = 5, s: int = 10, q: int = 7, seed: int = 0, masked: bool = False) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    x = lambda n: torch.rand(t, n, 1, generator=g, dtype=F64) * 10 - 5  # noqa: E731
    sx, qx = x(s), x(q)
    amp = torch.rand(t, 1, 1, generator=g, dtype=F64) * 4.9 + 0.1
    ph = torch.rand(t, 1, 1, generator=g, dtype=F64) * 3.14
    smask = None
    if masked:
        smask = torch.arange(s)[None] < torch.randint(2, s + 1, (t, 1), generator=g)
    return TaskBatch(sx, amp * torch.sin(sx - ph), qx, amp * torch.sin(qx - ph), support_mask=smask)


def _rel_err(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    num = torch.sqrt(sum(((x - y) ** 2).sum() for x, y in zip(a, b, strict=True)))
    den = torch.sqrt(sum((y**2).sum() for y in b))
    return float(num / den)


# ------------------------------------------------------------------- MAML is a special case
@pytest.mark.parametrize("steps,masked", [(1, False), (3, False), (2, True)])
def test_one_particle_no_prior_reproduces_maml_meta_gradient(steps: int, masked: bool) -> None:
    torch.manual_seed(0)
    model = MLP(1, 1, hidden=(40, 40)).double()
    batch = _sinusoid_batch(masked=masked)
    maml = MAML(model, inner_lr=0.01, inner_steps=steps, task_kind="regression", noise=1.0)
    bmaml = BMAML(model, n_particles=1, inner_lr=0.01, inner_steps=steps, objective="nll", prior=None,
                  noise=math.sqrt(0.5), task_kind="regression")
    params = list(model.parameters())
    assert [p for p in bmaml.parameters()] == params  # nothing else to learn
    ref = torch.autograd.grad(maml.meta_loss(batch).loss, params)
    ours = torch.autograd.grad(bmaml.meta_loss(batch).loss, params)
    assert _rel_err(list(ours), list(ref)) < RTOL
    # and the test can fail: another noise rescales the query loss, a learned prior moves the start
    other = BMAML(model, n_particles=1, inner_lr=0.01, inner_steps=steps, objective="nll", prior=None,
                  noise=1.0, task_kind="regression")
    assert _rel_err(list(torch.autograd.grad(other.meta_loss(batch).loss, params)), list(ref)) > 0.1


def test_one_particle_adapt_equals_maml_adapt() -> None:
    torch.manual_seed(1)
    model = MLP(1, 1, hidden=(20,)).double()
    batch = _sinusoid_batch(t=3)
    maml = MAML(model, inner_lr=0.02, inner_steps=4, task_kind="regression", noise=1.0)
    bmaml = BMAML(model, n_particles=1, inner_lr=0.02, inner_steps=4, prior=None, task_kind="regression",
                  noise=math.sqrt(0.5))
    a = maml.adapt(batch.support).params
    b = bmaml.adapt(batch.support).params
    for k in a:
        torch.testing.assert_close(b[k][:, 0], a[k], rtol=1e-12, atol=1e-12)


# -------------------------------------------------- batched SVGD vs an independent task loop
def _reference_loss(learner: BMAML, batch: TaskBatch, start: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-task Python loop with torch.autograd.grad(create_graph=True) and an [M, M, P] kernel."""
    model = learner.model
    names = list(start)
    shapes = [start[n].shape[2:] for n in names]
    sizes = [math.prod(s) for s in shapes]
    var = float(learner.noise_variance())
    t_count = batch.n_tasks

    def unflat(row: torch.Tensor) -> dict[str, torch.Tensor]:
        return {n: c.reshape(s) for n, c, s in zip(names, row.split(sizes), shapes, strict=True)}

    def run(x0: torch.Tensor, sx: torch.Tensor, sy: torch.Tensor, steps: int) -> torch.Tensor:
        x = x0
        n_pts = sx.shape[0]
        tau = 2 * var / n_pts
        for _ in range(steps):
            scores = []
            for j in range(x.shape[0]):
                p = unflat(x[j])
                loss = ((functional_call(model, p, (sx,)) - sy) ** 2).mean()
                logp = -loss
                if learner.prior is not None:
                    lp = learner.prior.log_prob(p)
                    if learner.objective == "chaser":  # the chaser's target prior is detached
                        mu = {k: v.detach() for k, v in learner.prior.mean.items()}
                        pvar = {k: v.detach() for k, v in learner.prior.variance.items()}
                        lp = sum(-0.5 * ((p[k] - mu[k]) ** 2 / pvar[k]).sum() for k in p)
                    logp = logp + tau * lp
                scores.append(torch.autograd.grad(logp, x, create_graph=True)[0][j])
            s = torch.stack(scores)
            m = x.shape[0]
            diff = x[:, None, :] - x[None, :, :]  # [i, j] = x_i - x_j
            d2 = (diff**2).sum(-1)
            iu = torch.triu_indices(m, m, 1)
            h = torch.sort(d2.detach()[iu[0], iu[1]]).values[(iu.shape[1] - 1) // 2] / math.log(m)
            k = torch.exp(-d2 / h)
            # grad_{x_j} k(x_j, x_i) = -2 / h (x_j - x_i) k_ij = 2 / h diff[i, j] k_ij
            rep = (2 / h * diff * k[..., None]).sum(1)
            drive = k @ s
            denom = k.sum(1, keepdim=True) if learner.normalize else m
            x = x + learner.inner_lr * (drive + tau * rep) / denom
        return x

    total = torch.zeros((), dtype=F64)
    for t in range(t_count):
        x0 = torch.cat([start[n][t].reshape(start[n].shape[1], -1) for n in names], 1)
        follower = run(x0, batch.support_x[t], batch.support_y[t], learner.inner_steps)
        if learner.objective == "chaser":
            jx = torch.cat([batch.support_x[t], batch.query_x[t]])
            jy = torch.cat([batch.support_y[t], batch.query_y[t]])
            leader = run(follower.detach().requires_grad_(), jx, jy, learner.leader_steps).detach()
            total = total + ((follower - leader) ** 2).sum()
        else:
            comp = torch.stack([
                (-0.5 * (math.log(2 * math.pi * var) + (batch.query_y[t] - functional_call(model, unflat(row), (batch.query_x[t],))) ** 2 / var)).sum(-1)
                for row in follower
            ])  # [M, Q]
            total = total - (torch.logsumexp(comp, 0) - math.log(comp.shape[0])).mean()
    return total / t_count


@pytest.mark.parametrize(
    "prior,normalize,objective",
    [(None, True, "nll"), ("learned", False, "nll"), ("learned", True, "chaser")],
)
def test_meta_gradient_matches_per_task_autograd_loop(prior: str | None, normalize: bool, objective: str) -> None:
    torch.manual_seed(2)
    model = MLP(1, 1, hidden=(8,)).double()
    batch = _sinusoid_batch(t=2, s=5, q=4, seed=1)
    learner = BMAML(model, n_particles=3, inner_lr=0.05, inner_steps=2, leader_steps=2, objective=objective,
                    prior=prior, normalize=normalize, prior_init_std=0.3, noise=0.5, task_kind="regression")
    params = [p for p in learner.parameters()]
    torch.manual_seed(7)
    ours = torch.autograd.grad(learner.meta_loss(batch).loss, params)
    torch.manual_seed(7)  # same draws as meta_loss made: per task, from one draw of the RNG (task_noise)
    keys = task_keys(batch.support_x, batch.support_y, batch.support_mask)
    start = learner.initial_particles(batch.n_tasks, seeds=task_seeds(keys) if learner.prior is not None else None)
    ref = torch.autograd.grad(_reference_loss(learner, batch, start), params)
    assert _rel_err(list(ours), list(ref)) < RTOL


# ------------------------------------------------------------------------------ contracts
def test_shapes_regression_and_classification() -> None:
    torch.manual_seed(3)
    batch = _sinusoid_batch(t=4, s=6, q=5)
    learner = BMAML(MLP(1, 1, hidden=(16,)).double(), n_particles=4, inner_steps=2, prior="learned",
                    task_kind="regression")
    post = learner.adapt(batch.support)
    assert isinstance(post, ParticlePosterior) and post.n_tasks == 4 and post.n_particles == 4
    assert post.params["head.weight"].shape == (4, 4, 1, 16)
    pred = learner.predict(post, batch.query_x)
    assert isinstance(pred, GaussianPredictive) and pred.sample_mean.shape == (4, 4, 5, 1)
    assert bool((pred.epistemic_variance > 0).all())  # particles disagree

    g = torch.Generator().manual_seed(0)
    n_way = 3
    cls = TaskBatch(torch.randn(2, 6, 4, generator=g), torch.arange(3).repeat(2, 2),
                    torch.randn(2, 3, 4, generator=g), torch.arange(3).repeat(2, 1), n_way=n_way)
    for objective in ("chaser", "nll"):
        c = BMAML(MLP(4, n_way, hidden=(8,)), n_particles=3, objective=objective, task_kind="classification")
        out = c.meta_loss(cls)
        # accuracy is a proportion of hits over T * Q = 6 queries; with the plain NLL objective the
        # loss is the reported mixture NLL of the query set
        assert out.metrics["accuracy"] * 6 == pytest.approx(round(out.metrics["accuracy"] * 6), abs=1e-6)
        if objective == "nll":
            assert out.metrics["nll"] == pytest.approx(float(out.loss.detach()), rel=1e-6)
        p = c.predict(c.adapt(cls.support), cls.query_x)
        assert isinstance(p, CategoricalPredictive) and p.sample_probs.shape == (3, 2, 3, 3)


def test_adapt_is_pure_and_seeded() -> None:
    torch.manual_seed(4)
    batch = _sinusoid_batch(t=3)
    learner = BMAML(MLP(1, 1, hidden=(16,)).double(), n_particles=3, inner_steps=2, prior="learned",
                    task_kind="regression")
    before = {k: v.clone() for k, v in learner.state_dict().items()}
    a = learner.adapt(batch.support, generator=torch.Generator().manual_seed(5))
    b = learner.adapt(batch.support, generator=torch.Generator().manual_seed(5))
    c = learner.adapt(batch.support, generator=torch.Generator().manual_seed(6))
    after = learner.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in learner.parameters())
    assert all(torch.equal(a.params[k], b.params[k]) for k in a.params)
    assert not torch.equal(a.params["head.bias"], c.params["head.bias"])


@pytest.mark.parametrize("prior,objective", [("learned", "chaser"), ("learned", "nll"), (None, "nll"), (None, "chaser")])
def test_gradients_reach_every_meta_parameter(prior: str | None, objective: str) -> None:
    torch.manual_seed(5)
    learner = BMAML(MLP(1, 1, hidden=(16,)).double(), n_particles=3, inner_steps=2, prior=prior,
                    objective=objective, task_kind="regression")
    learner.meta_loss(_sinusoid_batch(t=3)).loss.backward()
    for name, p in learner.named_parameters():
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), name


# ------------------------------------------------------------------ LinearGaussian behaviour
@pytest.fixture(scope="module")
def lg_trained() -> dict[str, dict[int, dict[str, float]]]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # module-scoped: set here too
    try:
        # every learner gets the true noise std, so that only the posterior over w differs
        torch.manual_seed(0)
        maml = MAML(MLP(1, 1, hidden=()).double(), inner_lr=0.15, inner_steps=5, task_kind="regression", noise=0.3)
        torch.manual_seed(0)
        bmaml = BMAML(MLP(1, 1, hidden=()).double(), n_particles=10, inner_lr=0.15, inner_steps=5, leader_steps=5,
                      prior="learned", prior_init_std=1.0, task_kind="regression", noise=0.3)
        lg_train(maml, 150)
        lg_train(bmaml, 150)
        return {"maml": lg_scores(maml), "bmaml": lg_scores(bmaml)}
    finally:
        torch.set_num_threads(n)


def test_linear_gaussian_variance_shrinks_with_support(lg_trained: dict) -> None:
    v = [lg_trained["bmaml"][k]["var"] for k in K_EVAL]
    assert all(a > b for a, b in zip(v, v[1:], strict=False)), v
    assert v[0] > 2 * v[-1], v


def test_linear_gaussian_closer_to_exact_than_maml(lg_trained: dict) -> None:
    mean = lambda name, key: sum(lg_trained[name][k][key] for k in K_EVAL) / len(K_EVAL)  # noqa: E731
    assert mean("bmaml", "kl") < 0.5 * mean("maml", "kl"), lg_trained
    assert mean("bmaml", "w2") < mean("maml", "w2"), lg_trained


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"n_particles": 0}, "n_particles"),
        ({"n_particles": 2.5}, "n_particles"),
        ({"bandwidth": 0.0}, "bandwidth"),
        ({"bandwidth": -1.0}, "bandwidth"),
        ({"bandwidth": float("nan")}, "bandwidth"),
        ({"objective": "elbo"}, "objective"),
        ({"leader_steps": 0}, "leader_steps"),
        ({"inner_lr": -0.1}, "inner_lr"),
        ({"prior": "flat"}, "prior"),
        ({"noise": 0.0}, "noise"),
        ({"normalize": "yes"}, "normalize"),
        ({"prior_weight": -1.0}, "prior_weight"),
    ],
)
def test_bad_options_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        BMAML(MLP(1, 1, hidden=(4,)), **kwargs)


def test_prior_shapes_must_match_the_backbone() -> None:
    model = MLP(1, 1, hidden=(4,))
    with pytest.raises(ShapeError, match="prior"):
        BMAML(model, prior=DiagonalGaussianPrior(MLP(1, 1, hidden=(5,))))
    with pytest.raises(ConfigError, match="own backbone"):
        BMAML(model, prior=DiagonalGaussianPrior(MLP(1, 1, hidden=(4,))))
    ok = BMAML(model, prior=DiagonalGaussianPrior(model, init_std=0.3))
    assert ok.prior is not None and ok.prior.init_std == 0.3


def test_nan_particles_raise_a_library_error() -> None:
    model = MLP(1, 1, hidden=(4,)).double()
    learner = BMAML(model, n_particles=3, prior=None, task_kind="regression")
    with torch.no_grad():
        learner.extra_particles["head__bias"][0] = float("nan")
    batch = _sinusoid_batch(t=2)
    with pytest.raises(NumericalError, match="particles"):
        learner.adapt(batch.support)
    with pytest.raises(NumericalError, match="particles"):
        learner.meta_loss(batch)
    # a diverging inner loop is caught the same way
    wild = BMAML(MLP(1, 1, hidden=(4,)).double(), n_particles=2, inner_lr=1e6, inner_steps=8, prior="learned",
                 task_kind="regression")
    with pytest.raises(NumericalError):
        wild.adapt(batch.support)


def test_wrong_task_kind_and_query_shape_raise() -> None:
    learner = BMAML(MLP(1, 1, hidden=(4,)).double(), n_particles=2, task_kind="classification")
    with pytest.raises(ShapeError):
        learner.adapt(_sinusoid_batch(t=2).support)
    reg = BMAML(MLP(1, 1, hidden=(4,)).double(), n_particles=2, task_kind="regression")
    post = reg.adapt(_sinusoid_batch(t=2).support)
    with pytest.raises(ShapeError, match="query_x"):
        reg.predict(post, torch.zeros(3, 4, 1, dtype=F64))


# ------------------------------------------------------------- trainer, evaluation, checkpoints
def test_trainer_evaluation_and_state_dict_roundtrip(tmp_path) -> None:
    from bayesmeta.evaluation import evaluate
    from bayesmeta.tasks import Sinusoid, fixed_episodes
    from bayesmeta.training import MetaTrainer

    source = Sinusoid(k_shot=5, n_query=5)
    torch.manual_seed(8)
    learner = BMAML(MLP(1, 1, hidden=(8,)), n_particles=3, task_kind="regression")
    res = MetaTrainer(learner, source, steps=3, meta_batch_size=4, seed=0, progress=False, run_dir=tmp_path).fit()
    assert res.steps == 3
    ev = evaluate(learner, fixed_episodes(source, 2, seed=1, tasks_per_batch=3), progress=False)
    assert {"mse", "nll", "pit_error", "coverage_90"} <= set(ev.summary)
    # the backbone is registered under the learner and its prior: both keys load consistently
    twin = BMAML(MLP(1, 1, hidden=(8,)), n_particles=3, task_kind="regression")
    twin.load_state_dict(torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["learner"])
    sup = fixed_episodes(source, 1, seed=2, tasks_per_batch=2)[0].support
    a = learner.adapt(sup, generator=torch.Generator().manual_seed(0))
    b = twin.adapt(sup, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(a.params[k], b.params[k]) for k in a.params)


# ------------------------------------------------- M = 1: the inner loop without a particle axis
@pytest.mark.parametrize("prior,objective,masked", [(None, "nll", False), (None, "chaser", True), ("learned", "nll", True)])
def test_one_particle_descent_path_equals_the_svgd_path(prior: str | None, objective: str, masked: bool) -> None:
    """With M = 1 and no prior score, meta_loss runs MAML's inner loop on [T, *shape] parameter
    sets; the general route (SVGD steps on [T, 1, *shape] particles, the particle axis kept) must
    give the same loss and the same meta-gradient."""
    torch.manual_seed(0)
    learner = BMAML(MLP(1, 1, hidden=(8, 8)).double(), n_particles=1, inner_lr=0.05, inner_steps=2, prior=prior,
                    prior_weight=0.0, objective=objective, task_kind="regression")  # fmt: skip
    assert learner._moves_by_descent()
    batch = _sinusoid_batch(masked=masked)
    params = [p for p in learner.parameters() if p.requires_grad]
    torch.manual_seed(1)
    fast = learner.meta_loss(batch).loss
    g_fast = torch.autograd.grad(fast, params, allow_unused=True)
    # the general route: force the SVGD path on the same learner (same prior draws: seeded per task)
    learner._moves_by_descent = lambda: False  # type: ignore[method-assign]
    torch.manual_seed(1)
    slow = learner.meta_loss(batch).loss
    g_slow = torch.autograd.grad(slow, params, allow_unused=True)
    assert float(fast) == pytest.approx(float(slow), rel=1e-12)  # float64: equal to rounding
    for a, b in zip(g_fast, g_slow, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_one_particle_diverging_inner_loop_raises_naming_the_particles() -> None:
    """The finiteness check left the hot path (it runs only when the loss is not finite): a
    diverging M = 1 inner loop must still be reported as a library error, not a NaN loss."""
    learner = BMAML(MLP(1, 1, hidden=(4,)).double(), n_particles=1, inner_lr=1e200, inner_steps=3, prior=None,
                    objective="nll", task_kind="regression")  # fmt: skip
    with pytest.raises(NumericalError, match="particles"):
        learner.meta_loss(_sinusoid_batch(t=2))
