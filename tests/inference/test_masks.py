"""Masks for every learner of the contract suite: padded points holding garbage, hidden by the
mask, change nothing.

For each learner in ``test_contract.LEARNERS`` (imported, so a learner added there is covered
here too), in float64:

* support padding: appending hidden support points gives the same predictive and meta-loss as
  the unpadded batch, and two different garbages behind the same mask give identical results;
* query padding: appending hidden query points leaves the meta-loss unchanged, whatever the
  garbage (targets and inputs) behind the mask.

Sampling learners get the same global seed before each call, so their noise is comparable.

The Conv4 learners use the contract suite's normalizations (task-local statistics from the
present support points by default; ProtoNet also with every per-example ``norm``).
Tolerances are float64 rounding: padding changes the length of reductions (more exact zeros
summed, a different blocking of matmuls), so results agree to ~1e-12, not bitwise; a mask that is
ignored moves them by O(1) with garbage of size 1e2.
"""

from __future__ import annotations

import pytest
import torch
from test_contract import LEARNERS

from bayesmeta.exceptions import ShapeError
from bayesmeta.inference import MetaLearner
from bayesmeta.predictive import CategoricalPredictive, Predictive
from bayesmeta.tasks import TaskBatch

F64 = torch.float64
EXTRA = 3
ATOL = 1e-9  # float64: ~1e4 rounding steps of eps 2.2e-16 on O(1..10) values, far below O(1)


def _garbage_x(x: torch.Tensor, extra: int, g: torch.Generator) -> torch.Tensor:
    return 1e2 * torch.randn(x.shape[0], extra, *x.shape[2:], generator=g, dtype=x.dtype)


def _garbage_y(batch: TaskBatch, y: torch.Tensor, extra: int, g: torch.Generator) -> torch.Tensor:
    if batch.is_classification:
        return torch.randint(0, batch.n_way, (y.shape[0], extra), generator=g)  # real labels, wrong points
    return 1e2 * torch.randn(y.shape[0], extra, *y.shape[2:], generator=g, dtype=y.dtype)


def _cat_mask(mask: torch.Tensor | None, like: torch.Tensor, extra: int) -> torch.Tensor:
    t, n = like.shape[:2]
    present = torch.ones(t, n, dtype=torch.bool) if mask is None else mask
    present = present.clone()
    return torch.cat([present, torch.zeros(t, extra, dtype=torch.bool)], 1)


def pad_support(batch: TaskBatch, seed: int, extra: int = EXTRA) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    sx = torch.cat([batch.support_x, _garbage_x(batch.support_x, extra, g)], 1)
    sy = torch.cat([batch.support_y, _garbage_y(batch, batch.support_y, extra, g)], 1)
    mask = _cat_mask(batch.support_mask, batch.support_x, extra)
    return TaskBatch(sx, sy, batch.query_x, batch.query_y, mask, batch.query_mask, batch.n_way)


def pad_query(batch: TaskBatch, seed: int, extra: int = EXTRA) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    qx = torch.cat([batch.query_x, _garbage_x(batch.query_x, extra, g)], 1)
    qy = torch.cat([batch.query_y, _garbage_y(batch, batch.query_y, extra, g)], 1)
    mask = _cat_mask(batch.query_mask, batch.query_x, extra)
    return TaskBatch(batch.support_x, batch.support_y, qx, qy, batch.support_mask, mask, batch.n_way)


def _setup(name: str) -> tuple[MetaLearner, TaskBatch]:
    factory, batch_fn = LEARNERS[name]
    torch.manual_seed(0)
    learner = factory().double()
    return learner, batch_fn(0).to(dtype=F64)


def _predict(learner: MetaLearner, batch: TaskBatch, query_x: torch.Tensor) -> Predictive:
    torch.manual_seed(1)
    with torch.no_grad():
        return learner.predict(learner.adapt(batch.support), query_x)


def _loss(learner: MetaLearner, batch: TaskBatch) -> torch.Tensor:
    torch.manual_seed(2)
    return learner.meta_loss(batch).loss.detach()


def _close(a: Predictive, b: Predictive, what: str) -> None:
    if isinstance(a, CategoricalPredictive):
        torch.testing.assert_close(a.sample_log_probs, b.sample_log_probs, rtol=0, atol=ATOL, msg=what)
    else:
        torch.testing.assert_close(a.sample_mean, b.sample_mean, rtol=0, atol=ATOL, msg=what)
        torch.testing.assert_close(a.sample_variance, b.sample_variance, rtol=0, atol=ATOL, msg=what)


NAMES = sorted(LEARNERS)
#: Learners whose meta_loss draws from the global RNG (checked below, so the list stays true).
SAMPLING = {
    "bmaml-regression", "bmaml-classification", "platipus-regression", "platipus-classification",
    "versa-classification", "versa-prototype-residual-classification", "versa-regression", "np", "anp",
    "ensemble-platipus-regression",  # an ensemble samples when its base learner does
}


@pytest.mark.parametrize("name", NAMES)
def test_hidden_support_points_change_nothing(name: str) -> None:
    learner, batch = _setup(name)
    a, b = pad_support(batch, seed=10), pad_support(batch, seed=11)
    assert not torch.equal(a.support_x, b.support_x)
    ref = _predict(learner, batch, batch.query_x)
    _close(_predict(learner, a, batch.query_x), ref, f"{name}: padded support vs unpadded")
    _close(_predict(learner, b, batch.query_x), ref, f"{name}: other garbage vs unpadded")
    loss = _loss(learner, batch)
    torch.testing.assert_close(_loss(learner, a), loss, rtol=0, atol=ATOL, msg=f"{name}: meta_loss")
    torch.testing.assert_close(_loss(learner, b), loss, rtol=0, atol=ATOL, msg=f"{name}: meta_loss")


@pytest.mark.parametrize("name", NAMES)
def test_hidden_query_points_are_left_out_of_the_meta_loss(name: str) -> None:
    learner, batch = _setup(name)
    a, b = pad_query(batch, seed=20), pad_query(batch, seed=21)
    # same shapes and mask, different garbage: identical under one seed whatever the sampler does
    torch.testing.assert_close(_loss(learner, a), _loss(learner, b), rtol=0, atol=ATOL, msg=name)
    # and the predictive of the real query points does not see the hidden ones
    pa, pb = _predict(learner, batch, a.query_x), _predict(learner, batch, b.query_x)
    q = batch.query_x.shape[1]
    if isinstance(pa, CategoricalPredictive):
        torch.testing.assert_close(pa.sample_log_probs[:, :, :q], pb.sample_log_probs[:, :, :q], rtol=0, atol=ATOL)
    else:
        torch.testing.assert_close(pa.sample_mean[:, :, :q], pb.sample_mean[:, :, :q], rtol=0, atol=ATOL)


@pytest.mark.parametrize("name", NAMES)
def test_sampling_list_is_the_learners_whose_loss_depends_on_the_seed(name: str) -> None:
    learner, batch = _setup(name)
    torch.manual_seed(2)
    l1 = learner.meta_loss(batch).loss.detach()
    torch.manual_seed(3)
    l2 = learner.meta_loss(batch).loss.detach()
    assert torch.equal(l1, l2) == (name not in SAMPLING)


@pytest.mark.parametrize("name", sorted(set(NAMES) - SAMPLING))
def test_hidden_query_points_loss_equals_the_trimmed_batch(name: str) -> None:
    """Against the batch without padding, for learners whose loss uses no random numbers (the
    sampling ones draw noise per query point, so Q + extra points take a different stream; they
    are covered by the equal-shape comparison above)."""
    learner, batch = _setup(name)
    loss = _loss(learner, batch)
    torch.testing.assert_close(_loss(learner, pad_query(batch, seed=20)), loss, rtol=0, atol=ATOL, msg=name)


@pytest.mark.parametrize("kind", ["maml-regression", "protonet"])
@pytest.mark.parametrize("field", ["support_mask", "query_mask"])
@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8, torch.float32])
def test_task_batch_rejects_a_non_boolean_mask(field: str, dtype: torch.dtype, kind: str) -> None:
    """A ShapeError naming the field, for regression and classification sets alike (a float mask
    once reached the label check first and raised torch's IndexError there)."""
    _, batch_fn = LEARNERS[kind]
    b = batch_fn(0)
    n = b.support_x.shape[1] if field == "support_mask" else b.query_x.shape[1]
    mask = torch.ones(b.support_x.shape[0], n, dtype=dtype)
    kw = {"support_mask": None, "query_mask": None, field: mask}
    with pytest.raises(ShapeError, match=rf"{field}: expected a bool tensor of shape \[T, N\]"):
        TaskBatch(b.support_x, b.support_y, b.query_x, b.query_y, n_way=b.n_way, **kw)
    kw[field] = mask.bool()  # the same mask as bool is accepted
    TaskBatch(b.support_x, b.support_y, b.query_x, b.query_y, n_way=b.n_way, **kw)
