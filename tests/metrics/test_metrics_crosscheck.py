"""Classification metrics against independent implementations: torchmetrics, netcal, sklearn, numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bayesmeta.metrics import (
    accuracy,
    brier_score,
    classwise_ece,
    ece,
    mce,
    nll,
    reliability_diagram,
)
from bayesmeta.predictive import CategoricalPredictive


def _random(n: int, c: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random probabilities (sharp and flat rows, no confidence of exactly 1) and noisy labels."""
    rng = np.random.default_rng(seed)
    sharpness = rng.choice([0.3, 1.0, 3.0], size=(n, 1))
    p = rng.dirichlet(np.ones(c), size=n) ** sharpness
    p = 0.999 * p / p.sum(1, keepdims=True) + 0.001 / c
    # labels drawn from p itself for 70% of the rows, uniformly for the rest
    from_p = (p.cumsum(1) > rng.random((n, 1))).argmax(1)
    y = np.where(rng.random(n) < 0.7, from_p, rng.integers(0, c, n))
    return p, y


@pytest.mark.parametrize("c", [2, 3, 10])
@pytest.mark.parametrize("n_bins", [1, 7, 15, 40])
def test_ece_mce_match_torchmetrics(c: int, n_bins: int) -> None:
    # torchmetrics casts confidences to float32; rounding the inputs to float32 first makes both
    # libraries bin exactly the same numbers, and what remains is torchmetrics' float32 sums.
    from torchmetrics.functional.classification import multiclass_calibration_error
    p, y = _random(1000, c, seed=c * 100 + n_bins)
    pt, yt = torch.from_numpy(p).float().double(), torch.from_numpy(y)
    ours_ece = float(ece(pt, yt, n_bins=n_bins))
    ours_mce = float(mce(pt, yt, n_bins=n_bins))
    ref_ece = float(multiclass_calibration_error(pt, yt, num_classes=c, n_bins=n_bins, norm="l1"))
    ref_mce = float(multiclass_calibration_error(pt, yt, num_classes=c, n_bins=n_bins, norm="max"))
    assert ours_ece == pytest.approx(ref_ece, abs=1e-6)
    assert ours_mce == pytest.approx(ref_mce, abs=1e-6)
    assert 0.0 < ours_ece <= ours_mce <= 1.0


@pytest.mark.parametrize("n_bins", [1, 15])
def test_ece_mce_match_torchmetrics_core_in_float64(n_bins: int) -> None:
    """torchmetrics' binning and reduction run in float64: agreement to rounding error."""
    tm_core = pytest.importorskip("torchmetrics.functional.classification.calibration_error")
    p, y = _random(5000, 4, seed=n_bins)
    pt, yt = torch.from_numpy(p), torch.from_numpy(y)
    conf, top = pt.max(1)
    hit = top.eq(yt).double()
    for norm, ours in (("l1", ece(pt, yt, n_bins)), ("max", mce(pt, yt, n_bins))):
        ref = tm_core._ce_compute(conf, hit, n_bins, norm=norm)
        assert float(ours) == pytest.approx(float(ref), abs=1e-12)


@pytest.mark.parametrize("c", [3, 10])
def test_ece_mce_match_netcal(c: int) -> None:
    netcal = pytest.importorskip("netcal.metrics")
    p, y = _random(2000, c, seed=7)
    pt, yt = torch.from_numpy(p), torch.from_numpy(y)
    assert float(ece(pt, yt, 15)) == pytest.approx(netcal.ECE(15).measure(p, y), abs=1e-6)
    assert float(mce(pt, yt, 15)) == pytest.approx(netcal.MCE(15).measure(p, y), abs=1e-6)


def test_per_task_ece_equals_torchmetrics_per_task() -> None:
    from torchmetrics.functional.classification import multiclass_calibration_error
    torch.manual_seed(0)
    pred = CategoricalPredictive(logits=2.0 * torch.randn(3, 6, 50, 5, dtype=torch.float64))
    y = torch.randint(0, 5, (6, 50))
    per_task = ece(pred, y, n_bins=10)
    assert per_task.shape == (6,)
    probs = pred.probs
    for t in range(6):
        ref = multiclass_calibration_error(probs[t], y[t], num_classes=5, n_bins=10, norm="l1")
        assert float(per_task[t]) == pytest.approx(float(ref), abs=1e-6)
    # the same function on the plain probability tensor gives the same values
    torch.testing.assert_close(ece(probs, y, n_bins=10), per_task)


@pytest.mark.parametrize("c", [2, 4, 12])
def test_nll_matches_sklearn_log_loss(c: int) -> None:
    from sklearn.metrics import log_loss
    p, y = _random(1500, c, seed=c)
    ours = float(nll(torch.from_numpy(p), torch.from_numpy(y)))
    assert ours == pytest.approx(log_loss(y, p, labels=list(range(c))), abs=1e-6)


def test_nll_of_predictive_matches_sklearn_on_mixture() -> None:
    from sklearn.metrics import log_loss
    torch.manual_seed(1)
    pred = CategoricalPredictive(logits=torch.randn(5, 4, 30, 6, dtype=torch.float64))
    y = torch.randint(0, 6, (4, 30))
    per_task = nll(pred, y)
    for t in range(4):
        ref = log_loss(y[t].numpy(), pred.probs[t].numpy(), labels=list(range(6)))
        assert float(per_task[t]) == pytest.approx(ref, abs=1e-6)


@pytest.mark.parametrize("c", [2, 5])
def test_brier_matches_numpy(c: int) -> None:
    p, y = _random(1000, c, seed=3)
    ref = np.mean(np.sum((p - np.eye(c)[y]) ** 2, axis=1))
    assert float(brier_score(torch.from_numpy(p), torch.from_numpy(y))) == pytest.approx(ref, abs=1e-12)
    if c == 2:  # binary: twice sklearn's positive-class Brier score
        from sklearn.metrics import brier_score_loss

        assert float(brier_score(torch.from_numpy(p), torch.from_numpy(y))) == pytest.approx(
            2 * brier_score_loss(y, p[:, 1]), abs=1e-12
        )


def test_accuracy_matches_numpy() -> None:
    p, y = _random(999, 7, seed=11)
    assert float(accuracy(torch.from_numpy(p), torch.from_numpy(y))) == pytest.approx(np.mean(p.argmax(1) == y))


def _adaptive_ece_numpy(p: np.ndarray, y: np.ndarray, n_bins: int) -> float:
    conf, hit = p.max(1), (p.argmax(1) == y).astype(float)
    order = np.argsort(conf, kind="stable")
    total = 0.0
    for chunk in np.array_split(order, n_bins):
        if chunk.size:
            total += abs(hit[chunk].sum() - conf[chunk].sum())
    return total / len(y)


@pytest.mark.parametrize("n, n_bins", [(1000, 15), (37, 10), (5, 15)])
def test_equal_mass_ece_matches_numpy_reference(n: int, n_bins: int) -> None:
    p, y = _random(n, 4, seed=n)
    ours = float(ece(torch.from_numpy(p), torch.from_numpy(y), n_bins=n_bins, binning="equal_mass"))
    assert ours == pytest.approx(_adaptive_ece_numpy(p, y, n_bins), abs=1e-12)
    diag = reliability_diagram(torch.from_numpy(p), torch.from_numpy(y), n_bins=n_bins, binning="equal_mass")
    counts = diag.count.numpy()
    assert counts.sum() == n and counts.max() - counts[counts > 0].min() <= 1


def _classwise_ece_numpy(p: np.ndarray, y: np.ndarray, n_bins: int) -> float:
    edges = np.linspace(0, 1, n_bins + 1)
    out = []
    for c in range(p.shape[1]):
        idx = np.clip(np.searchsorted(edges, p[:, c], side="right") - 1, 0, n_bins - 1)
        hit = (y == c).astype(float)
        err = sum(abs(hit[idx == b].sum() - p[idx == b, c].sum()) for b in range(n_bins))
        out.append(err / len(y))
    return float(np.mean(out))


def test_classwise_ece_matches_numpy_reference() -> None:
    p, y = _random(800, 5, seed=5)
    ours = float(classwise_ece(torch.from_numpy(p), torch.from_numpy(y), n_bins=15))
    assert ours == pytest.approx(_classwise_ece_numpy(p, y, 15), abs=1e-12)


def test_reliability_diagram_matches_ece_and_bins() -> None:
    p, y = _random(2000, 3, seed=9)
    pt, yt = torch.from_numpy(p), torch.from_numpy(y)
    d = reliability_diagram(pt, yt, n_bins=10)
    assert d.n_bins == 10 and int(d.count.sum()) == 2000
    assert d.ece == pytest.approx(float(ece(pt, yt, 10)), abs=1e-12)
    assert d.mce == pytest.approx(float(mce(pt, yt, 10)), abs=1e-12)
    conf, hit = p.max(1), p.argmax(1) == y
    b = 7  # spot-check one bin directly
    inside = (conf >= 0.7) & (conf < 0.8)
    assert int(d.count[b]) == inside.sum()
    assert float(d.accuracy[b]) == pytest.approx(hit[inside].mean())
    assert float(d.confidence[b]) == pytest.approx(conf[inside].mean())
    # with C = 3 no confidence is below 1/3: the first three bins are empty and NaN
    assert torch.isnan(d.accuracy[:3]).all() and (d.count[:3] == 0).all()
