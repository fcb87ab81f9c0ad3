"""Property tests (hypothesis): shapes, probabilities of exactly 0 or 1, single-class tasks, empty bins."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bayesmeta.metrics import (
    accuracy,
    aurc,
    brier_score,
    classwise_ece,
    ece,
    mce,
    nll,
    reliability_diagram,
    task_metrics,
)
from bayesmeta.predictive import CategoricalPredictive

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def class_problem(draw: st.DrawFn, one_hot_rows: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``probs [T, N, C]`` (some rows one-hot, some with exact zeros) and ``targets [T, N]``."""
    t = draw(st.integers(1, 3))
    n = draw(st.integers(1, 12))
    c = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(c), size=(t, n))
    kind = rng.integers(0, 3, size=(t, n))
    onehot = np.eye(c)[rng.integers(0, c, size=(t, n))]
    p = np.where((kind == 0)[..., None] | one_hot_rows, onehot, p)  # exactly 0 and 1
    if c > 1 and not one_hot_rows:  # some rows with one exact zero
        zero = np.where(kind == 1, rng.integers(0, c, size=(t, n)), -1)
        p = np.where(np.arange(c) == zero[..., None], 0.0, p)
        p = p / p.sum(-1, keepdims=True)
    single_class = draw(st.booleans())
    y = np.full((t, n), rng.integers(0, c)) if single_class else rng.integers(0, c, size=(t, n))
    return torch.from_numpy(p), torch.from_numpy(y)


@SETTINGS
@given(class_problem(), st.integers(1, 20), st.sampled_from(["equal_width", "equal_mass"]))
def test_shapes_ranges_and_finiteness(problem: tuple[torch.Tensor, torch.Tensor], n_bins: int, binning: str) -> None:
    p, y = problem
    t = p.shape[0]
    for fn, hi in ((ece, 1.0), (mce, 1.0), (classwise_ece, 1.0)):
        v = fn(p, y, n_bins=n_bins, binning=binning)  # type: ignore[operator]
        assert v.shape == (t,) and torch.isfinite(v).all()
        assert (v >= -1e-12).all() and (v <= hi + 1e-12).all()
    assert (ece(p, y, n_bins, binning) <= mce(p, y, n_bins, binning) + 1e-12).all()
    for fn, hi in ((accuracy, 1.0), (brier_score, 2.0), (aurc, 1.0)):
        v = fn(p, y)
        assert v.shape == (t,) and (v >= -1e-12).all() and (v <= hi + 1e-12).all()
    v = nll(p, y)  # exact zeros on the target are floored, never inf
    assert v.shape == (t,) and torch.isfinite(v).all() and (v >= 0).all()
    # flat inputs give scalars
    assert ece(p[0], y[0], n_bins, binning).shape == ()


@SETTINGS
@given(class_problem(one_hot_rows=True), st.integers(1, 20))
def test_one_hot_predictions(problem: tuple[torch.Tensor, torch.Tensor], n_bins: int) -> None:
    """Confidence exactly 1: every point is in the last bin; ECE = MCE = the error rate."""
    p, y = problem
    err = 1.0 - accuracy(p, y)
    torch.testing.assert_close(ece(p, y, n_bins), err)
    torch.testing.assert_close(mce(p, y, n_bins), err)
    torch.testing.assert_close(brier_score(p, y), 2.0 * err)
    d = reliability_diagram(p, y, n_bins)
    assert int(d.count[-1]) == y.numel() and int(d.count[:-1].sum()) == 0


@SETTINGS
@given(st.integers(2, 6), st.integers(1, 30), st.integers(1, 50), st.integers(0, 1000))
def test_empty_bins_do_not_matter(c: int, n: int, n_bins: int, seed: int) -> None:
    """Splitting empty bins further (more bins than points) never changes bin contents' errors."""
    rng = np.random.default_rng(seed)
    p = torch.from_numpy(rng.dirichlet(np.ones(c), size=n))
    y = torch.from_numpy(rng.integers(0, c, size=n))
    d = reliability_diagram(p, y, n_bins)
    empty = d.count == 0
    assert torch.isnan(d.accuracy[empty]).all() and torch.isnan(d.confidence[empty]).all()
    assert torch.isfinite(d.accuracy[~empty]).all()
    assert int(d.count.sum()) == n
    # ECE is the count-weighted gap over non-empty bins only
    gap = (d.accuracy[~empty] - d.confidence[~empty]).abs()
    assert abs(float(ece(p, y, n_bins)) - float((gap * d.count[~empty]).sum() / n)) < 1e-12
    # with one point per bin (equal-mass, n_bins >= n), adaptive ECE is the mean |hit - conf|
    if n_bins >= n:
        conf, top = p.max(-1)
        ref = (top.eq(y).double() - conf).abs().mean()
        torch.testing.assert_close(ece(p, y, n_bins, "equal_mass"), ref)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(class_problem(), st.integers(1, 15), st.data())
def test_mask_equals_dropping_points(
    problem: tuple[torch.Tensor, torch.Tensor], n_bins: int, data: st.DataObject
) -> None:
    p, y = problem
    t, n, _ = p.shape
    mask = torch.tensor(data.draw(st.lists(st.lists(st.booleans(), min_size=n, max_size=n), min_size=t, max_size=t)))
    mask[:, 0] = True  # every task keeps a point
    for fn in (accuracy, nll, brier_score, aurc):
        masked = fn(p, y, mask=mask)
        for i in range(t):
            torch.testing.assert_close(masked[i], fn(p[i][mask[i]], y[i][mask[i]]))
    for binning in ("equal_width", "equal_mass"):
        for fn in (ece, mce, classwise_ece):
            masked = fn(p, y, n_bins, binning, mask=mask)
            for i in range(t):
                torch.testing.assert_close(masked[i], fn(p[i][mask[i]], y[i][mask[i]], n_bins, binning))


@SETTINGS
@given(st.integers(1, 4), st.integers(1, 3), st.integers(1, 8), st.integers(1, 5), st.integers(0, 1000))
def test_task_metrics_shapes(m: int, t: int, q: int, c: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    pred = CategoricalPredictive(logits=3 * torch.randn(m, t, q, c, generator=g, dtype=torch.float64))
    y = torch.randint(0, c, (t, q), generator=g)
    out = task_metrics(pred, y)
    for name, v in out.items():
        assert v.shape == (t,), name
        assert torch.isfinite(v).all(), name
    if m == 1:
        assert torch.all(out["mutual_information"] == 0)


@SETTINGS
@given(st.integers(1, 60), st.sampled_from([torch.float32, torch.float64]), st.integers(0, 1000))
def test_equal_width_bins_match_bucketize_at_the_edges(n_bins: int, dtype: torch.dtype, seed: int) -> None:
    """The fast floor-and-correct binning equals torchmetrics' bucketize construction exactly,
    also for confidences on an edge or one ulp either side of it."""
    from bayesmeta.metrics._binning import bin_index

    edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=dtype)
    near = torch.cat([edges, torch.nextafter(edges, torch.tensor(2.0, dtype=dtype)),
                      torch.nextafter(edges, torch.tensor(-1.0, dtype=dtype))]).clamp(0, 1)
    g = torch.Generator().manual_seed(seed)
    conf = torch.cat([near, torch.rand(200, generator=g, dtype=dtype)])
    ref = (torch.bucketize(conf, edges, right=True) - 1).clamp(0, n_bins - 1)
    assert torch.equal(bin_index(conf, None, n_bins, "equal_width"), ref)


@SETTINGS
@given(class_problem())
def test_task_metrics_finite_with_exact_zeros_and_ones(problem: tuple[torch.Tensor, torch.Tensor]) -> None:
    p, y = problem
    members = torch.stack([p, p.roll(1, dims=-1)])  # M = 2 members, both with exact zeros and ones
    out = task_metrics(CategoricalPredictive(probs=members), y)
    for name, v in out.items():
        assert torch.isfinite(v).all(), name
