"""The contract every MetaLearner passes (DESIGN.md sections 4 and 8).

Shapes, purity of ``adapt``, gradients reaching every meta-parameter, determinism under a seed,
bad input raising the library's own exceptions, and the non-transductive rule: a query's
prediction depends only on its own task's support set and on that query (alone == inside a
shuffled batch == one query at a time). Add a learner by adding a factory below.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from bayesmeta.exceptions import BayesMetaError
from bayesmeta.inference import MAML, MetaLearner, ProtoNet
from bayesmeta.inference.alpaca import ALPaCA
from bayesmeta.inference.anp import ANP
from bayesmeta.inference.bmaml import BMAML
from bayesmeta.inference.cnp import CNP
from bayesmeta.inference.dkt import DKT
from bayesmeta.inference.ensemble import Ensemble
from bayesmeta.inference.imaml import IMAML
from bayesmeta.inference.latent_np import NP
from bayesmeta.inference.matching import MatchingNet
from bayesmeta.inference.platipus import PLATIPUS
from bayesmeta.inference.reptile import Reptile
from bayesmeta.inference.versa import VERSA
from bayesmeta.models import MLP, Conv4
from bayesmeta.predictive import CategoricalPredictive, GaussianPredictive
from bayesmeta.tasks import TaskBatch

T, S, Q, N_WAY = 3, 6, 4, 3


def regression_batch(seed: int = 0) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    return TaskBatch(
        torch.randn(T, S, 1, generator=g), torch.randn(T, S, 1, generator=g),
        torch.randn(T, Q, 1, generator=g), torch.randn(T, Q, 1, generator=g),
    )


def classification_batch(seed: int = 0) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    sy = torch.arange(N_WAY).repeat(T, S // N_WAY)
    qy = torch.arange(N_WAY).repeat(T, 2)
    return TaskBatch(
        torch.rand(T, S, 1, 28, 28, generator=g), sy, torch.rand(T, 2 * N_WAY, 1, 28, 28, generator=g), qy, n_way=N_WAY
    )


def _nudged(versa: VERSA) -> VERSA:
    """``versa`` with its amortization's zero-initialised mean output layers set to small values."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for net in (versa.amortization.weight_mean, versa.amortization.bias_mean):
            net[-1].weight.copy_(1e-2 * torch.randn(net[-1].weight.shape, generator=g))
    return versa


def _features() -> torch.nn.Module:
    """A head-less feature extractor, so that every parameter is used by feature-based learners."""
    return torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.Tanh())


LEARNERS: dict[str, tuple[Callable[[], MetaLearner], Callable[[int], TaskBatch]]] = {
    "maml-regression": (lambda: MAML(MLP(1, 1, hidden=(8, 8)), inner_steps=2, task_kind="regression"), regression_batch),
    "fomaml-regression": (lambda: MAML(MLP(1, 1, hidden=(8,)), first_order=True, task_kind="regression"), regression_batch),
    "metasgd-regression": (lambda: MAML(MLP(1, 1, hidden=(8,)), learn_inner_lr=True, task_kind="regression"), regression_batch),
    "anil-regression": (lambda: MAML(MLP(1, 1, hidden=(8,)), adapt="head", inner_steps=3, task_kind="regression"), regression_batch),
    "maml-classification": (
        lambda: MAML(Conv4(out_features=N_WAY, hidden=8), inner_lr=0.1, task_kind="classification"), classification_batch
    ),
    "anil-classification": (
        lambda: MAML(Conv4(out_features=N_WAY, hidden=8), adapt="head", task_kind="classification"), classification_batch
    ),
    "protonet": (lambda: ProtoNet(Conv4(hidden=8)), classification_batch),
    **{
        f"protonet-{norm}": (lambda norm=norm: ProtoNet(Conv4(hidden=8, norm=norm)), classification_batch)
        for norm in ("group", "instance", "layer", "none")
    },
    "maml-classification-group": (
        lambda: MAML(Conv4(out_features=N_WAY, hidden=8, norm="group"), inner_lr=0.1, task_kind="classification"),
        classification_batch,
    ),
    "bmaml-classification": (
        lambda: BMAML(Conv4(out_features=N_WAY, hidden=8), n_particles=2, prior="learned", task_kind="classification"),
        classification_batch,
    ),
    "platipus-classification": (
        lambda: PLATIPUS(Conv4(out_features=N_WAY, hidden=8), n_samples=2, task_kind="classification"),
        classification_batch,
    ),
    "bmaml-regression": (
        lambda: BMAML(MLP(1, 1, hidden=(8,)), n_particles=3, prior="learned", task_kind="regression"), regression_batch
    ),
    # one particle, no prior: meta_loss runs MAML's inner loop without the particle axis
    "bmaml-one-particle-regression": (
        lambda: BMAML(MLP(1, 1, hidden=(8,)), n_particles=1, prior=None, objective="nll", task_kind="regression"),
        regression_batch,
    ),
    "platipus-regression": (lambda: PLATIPUS(MLP(1, 1, hidden=(8,)), n_samples=3, task_kind="regression"), regression_batch),
    "versa-classification": (lambda: VERSA(Conv4(hidden=8), n_samples=4), classification_batch),
    # its correction's output layers start at zero, which gives the layers before them no gradient
    # at step 0 only; _nudged moves them off zero so the gradient check sees every path
    "versa-prototype-residual-classification": (lambda: _nudged(VERSA(Conv4(hidden=8, norm="group"), n_samples=4, amortization="prototype_residual")), classification_batch),
    "versa-regression": (lambda: VERSA(_features(), n_samples=4, task_kind="regression", feature_dim=8), regression_batch),
    "dkt-regression": (lambda: DKT(_features(), task_kind="regression", feature_dim=8), regression_batch),
    "dkt-classification": (lambda: DKT(Conv4(hidden=8, norm="group"), task_kind="classification"), classification_batch),
    "dkt-classification-task": (lambda: DKT(Conv4(hidden=8), task_kind="classification"), classification_batch),
    "cnp": (lambda: CNP(hidden=16, r_dim=16), regression_batch),
    "np": (lambda: NP(hidden=16, r_dim=16, z_dim=8, n_samples=3), regression_batch),
    "anp": (lambda: ANP(hidden=16, r_dim=16, z_dim=8, n_samples=3), regression_batch),
    # ensembles (issue 12): a deterministic, a sampling and a classification base
    "ensemble-maml-regression": (
        lambda: Ensemble(lambda: MAML(MLP(1, 1, hidden=(8,)), task_kind="regression"), n_members=2), regression_batch
    ),
    "ensemble-platipus-regression": (
        lambda: Ensemble(lambda: PLATIPUS(MLP(1, 1, hidden=(8,)), n_samples=2, task_kind="regression"), n_members=2),
        regression_batch,
    ),
    "ensemble-protonet": (lambda: Ensemble(lambda: ProtoNet(Conv4(hidden=8)), n_members=2), classification_batch),
    # issue 16: the new learners
    "reptile-regression": (lambda: Reptile(MLP(1, 1, hidden=(8,)), inner_steps=2, task_kind="regression"), regression_batch),
    "reptile-classification": (
        lambda: Reptile(Conv4(out_features=N_WAY, hidden=8), inner_lr=0.1, inner_steps=2, task_kind="classification"),
        classification_batch,
    ),
    "imaml-regression": (lambda: IMAML(MLP(1, 1, hidden=(8,)), inner_steps=2, task_kind="regression"), regression_batch),
    "imaml-classification": (
        lambda: IMAML(Conv4(out_features=N_WAY, hidden=8), inner_lr=0.1, inner_steps=2, cg_steps=3, task_kind="classification"),
        classification_batch,
    ),
    "alpaca-regression": (lambda: ALPaCA(_features(), feature_dim=8), regression_batch),
    "matching": (lambda: MatchingNet(Conv4(hidden=8), learn_scale=True), classification_batch),
    "matching-fce": (lambda: MatchingNet(Conv4(hidden=8, norm="group"), fce=True, fce_steps=2), classification_batch),
}


@pytest.fixture(params=sorted(LEARNERS))
def case(request: pytest.FixtureRequest) -> tuple[MetaLearner, Callable[[int], TaskBatch]]:
    torch.manual_seed(0)
    factory, batch_fn = LEARNERS[request.param]
    return factory(), batch_fn


def test_predictive_shapes(case) -> None:
    learner, batch_fn = case
    batch = batch_fn(0)
    pred = learner.predict(learner.adapt(batch.support), batch.query_x)
    if batch.is_classification:
        assert isinstance(pred, CategoricalPredictive)
        assert pred.sample_log_probs.shape[1:] == (T, batch.query_x.shape[1], N_WAY)
        torch.testing.assert_close(pred.probs.sum(-1), torch.ones(T, batch.query_x.shape[1]))
    else:
        assert isinstance(pred, GaussianPredictive)
        assert pred.sample_mean.shape[1:] == (T, Q, 1)
        assert bool((pred.variance > 0).all())
    assert pred.log_prob(batch.query_y).shape == (T, batch.query_x.shape[1])


def test_adapt_is_pure(case) -> None:
    learner, batch_fn = case
    before = {k: v.clone() for k, v in learner.state_dict().items()}
    post = learner.adapt(batch_fn(0).support)
    learner.predict(post, batch_fn(0).query_x)
    after = learner.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k


def test_gradients_reach_every_meta_parameter(case) -> None:
    learner, batch_fn = case
    out = learner.meta_loss(batch_fn(0))
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    for name, p in learner.named_parameters():
        assert p.grad is not None, f"no gradient reached {name}"
        assert bool(torch.isfinite(p.grad).all()), name
        assert float(p.grad.abs().sum()) > 0, f"zero gradient at {name}"


def test_deterministic_under_a_seed(case) -> None:
    learner, batch_fn = case
    torch.manual_seed(5)
    a = learner.meta_loss(batch_fn(1)).loss
    torch.manual_seed(5)
    b = learner.meta_loss(batch_fn(1)).loss
    assert torch.equal(a, b)


def test_bad_input_raises_library_errors(case) -> None:
    learner, batch_fn = case
    batch = batch_fn(0)
    post = learner.adapt(batch.support)
    with pytest.raises(BayesMetaError, match="query_x"):
        learner.predict(post, batch.query_x[:2])  # wrong number of tasks
    with pytest.raises(BayesMetaError, match="query_x"):
        learner.predict(post, batch.query_x[0])  # task dim missing
    other = classification_batch if not batch.is_classification else regression_batch
    with pytest.raises(BayesMetaError):
        learner.meta_loss(other(0))  # wrong task kind, or wrong input shape for the backbone


@pytest.mark.parametrize("name", ["maml-regression", "maml-classification", "protonet"])
def test_mismatched_input_shape_names_the_argument(name: str) -> None:
    factory, batch_fn = LEARNERS[name]
    learner, batch = factory(), batch_fn(0)
    # 3 input features for a 1-d MLP; 3 channels for a 1-channel Conv4
    wrong = torch.zeros(*batch.support_x.shape[:2], *([3] if not batch.is_classification else [3, 28, 28]))
    bad = TaskBatch(wrong, batch.support_y, torch.zeros(T, batch.query_x.shape[1], *wrong.shape[2:]), batch.query_y, n_way=batch.n_way)
    with pytest.raises(BayesMetaError, match="support_x: (MLP|Conv4) expects examples of shape"):
        learner.meta_loss(bad)


def test_diverging_inner_loop_is_a_numerical_error_not_a_nan() -> None:
    from bayesmeta.exceptions import NumericalError

    torch.manual_seed(0)
    learner = MAML(MLP(1, 1, hidden=(8,)), inner_lr=1e3, inner_steps=30, task_kind="regression")
    batch = regression_batch()
    big = TaskBatch(batch.support_x * 100, batch.support_y * 100, batch.query_x, batch.query_y)
    with pytest.raises(NumericalError, match="inner loop diverged"):
        learner(big)


# ------------------------------------------------------------------ non-transductive rule
def _subset(batch: TaskBatch, tasks: list[int], queries: slice = slice(None)) -> TaskBatch:
    """The batch restricted to ``tasks`` (in that order) and a slice of their queries."""
    idx = torch.tensor(tasks)
    pick = lambda t: None if t is None else t[idx]  # noqa: E731
    qpick = lambda t: None if t is None else t[idx][:, queries]  # noqa: E731
    return TaskBatch(
        batch.support_x[idx], batch.support_y[idx], qpick(batch.query_x), qpick(batch.query_y),
        support_mask=pick(batch.support_mask), query_mask=qpick(batch.query_mask), n_way=batch.n_way,
    )


def _draws(pred) -> tuple[torch.Tensor, ...]:
    """Every per-sample number of a predictive, task dim at 1: ``[M, T, Q, ...]``."""
    if isinstance(pred, CategoricalPredictive):
        return (pred.sample_log_probs,)
    return (pred.sample_mean, pred.sample_variance)


def _predict(learner: MetaLearner, batch: TaskBatch, seed: int = 7):
    torch.manual_seed(seed)  # sampling learners draw their per-task seeds from the global RNG
    with torch.no_grad():
        return learner.predict(learner.adapt(batch.support), batch.query_x)


# 1e-5 in float64 (issue 9): far above the round-off of a few hundred flops (~1e-13), far
# below any real dependence on other tasks (the old cross-task batch norm moved probabilities
# by up to 1.0).
TOL = 1e-5


def test_prediction_depends_only_on_its_own_task_and_query(case) -> None:
    learner, batch_fn = case
    learner = learner.double()
    batch = batch_fn(3).to(dtype=torch.float64)
    full = _draws(_predict(learner, batch))
    # inside a shuffled batch
    perm = [2, 0, 1]
    shuffled = _draws(_predict(learner, _subset(batch, perm)))
    for a, b in zip(full, shuffled):
        torch.testing.assert_close(b, a[:, perm], rtol=0, atol=TOL)
    # alone
    for t in range(T):
        alone = _draws(_predict(learner, _subset(batch, [t])))
        for a, b in zip(full, alone):
            torch.testing.assert_close(b, a[:, t : t + 1], rtol=0, atol=TOL)
    # one query at a time, from one posterior of task 1 alone
    one = _subset(batch, [1])
    torch.manual_seed(7)
    with torch.no_grad():
        post = learner.adapt(one.support)
        for q in range(one.query_x.shape[1]):
            single = _draws(learner.predict(post, one.query_x[:, q : q + 1]))
            for a, b in zip(full, single):
                torch.testing.assert_close(b, a[:, 1:2, q : q + 1], rtol=0, atol=TOL)


def test_transductive_batch_norm_is_an_explicit_per_task_opt_in() -> None:
    """``norm="batch"`` uses the query set's statistics (MAML's original behaviour), per task."""
    torch.manual_seed(0)
    learner = ProtoNet(Conv4(hidden=8, norm="batch")).double()
    batch = classification_batch(3).to(dtype=torch.float64)
    full = _predict(learner, batch).probs
    for t in range(T):  # never across tasks
        torch.testing.assert_close(_predict(learner, _subset(batch, [t])).probs, full[t : t + 1], rtol=0, atol=TOL)
    # but a query's prediction depends on the other queries of its task: that is the opt-in
    half = _predict(learner, _subset(batch, [0], slice(0, 3))).probs
    assert float((half - full[0:1, 0:3]).abs().max()) > 1e-3
