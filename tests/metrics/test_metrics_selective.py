"""Selective prediction, shift detection and the uncertainty decomposition."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bayesmeta.metrics import (
    accuracy,
    accuracy_at_coverage,
    aurc,
    auroc,
    coverage_at_accuracy,
    coverage_at_risk,
    expected_entropy,
    mutual_information,
    predictive_entropy,
    risk_coverage_curve,
    selective_risk,
    shift_detection_auroc,
    task_uncertainty,
    uncertainty_decomposition,
)
from bayesmeta.predictive import CategoricalPredictive, GaussianPredictive


def _brute_curve(unc: np.ndarray, loss: np.ndarray) -> np.ndarray:
    order = np.argsort(unc, kind="stable")
    return np.cumsum(loss[order]) / np.arange(1, len(loss) + 1)


def test_risk_coverage_without_ties_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(4), size=200)
    y = rng.integers(0, 4, 200)
    ent = -(p * np.log(p)).sum(1)  # continuous: no ties
    loss = (p.argmax(1) != y).astype(float)
    curve = risk_coverage_curve(torch.from_numpy(p), torch.from_numpy(y))
    ref = _brute_curve(ent, loss)
    np.testing.assert_allclose(curve.risk.numpy(), ref, rtol=1e-12)
    np.testing.assert_allclose(curve.coverage.numpy(), np.arange(1, 201) / 200)
    assert curve.aurc == pytest.approx(ref.mean())
    assert curve.overall_risk == pytest.approx(loss.mean())
    assert float(aurc(torch.from_numpy(p), torch.from_numpy(y))) == pytest.approx(ref.mean())
    k = math.ceil(0.7 * 200)
    assert float(selective_risk(torch.from_numpy(p), torch.from_numpy(y), 0.7)) == pytest.approx(ref[k - 1])
    assert float(accuracy_at_coverage(torch.from_numpy(p), torch.from_numpy(y), 0.7)) == pytest.approx(1 - ref[k - 1])
    target = 0.5
    best = max([i + 1 for i in range(200) if 1 - ref[i] >= target], default=0) / 200
    assert float(coverage_at_accuracy(torch.from_numpy(p), torch.from_numpy(y), target)) == pytest.approx(best)


def test_ties_give_the_random_referral_expectation() -> None:
    """A constant score cannot rank: the curve is flat at the overall risk, at every coverage."""
    loss = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0])
    probs = torch.full((8, 2), 0.5, dtype=torch.float64)
    y = torch.tensor([1, 0, 0, 1, 0, 0, 0, 1])  # argmax is class 0, so loss = y
    assert torch.equal(loss, y.double())
    curve = risk_coverage_curve(probs, y)
    torch.testing.assert_close(curve.risk, torch.full((8,), 3 / 8, dtype=torch.float64))
    # ties only within groups: two groups of four, the certain group has 1 error in 4
    score = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    y2 = torch.tensor([1, 0, 0, 0, 1, 1, 0, 0])
    curve2 = risk_coverage_curve(probs, y2, score=score)
    expected = torch.tensor([0.25] * 4 + [(1 + 0.5 * j) / (4 + j) for j in range(1, 5)], dtype=torch.float64)
    torch.testing.assert_close(curve2.risk, expected)


def test_oracle_score_beats_random_and_per_task_shapes() -> None:
    torch.manual_seed(0)
    pred = CategoricalPredictive(logits=torch.randn(4, 5, 60, 3, dtype=torch.float64) * 2)
    y = pred.sample(torch.Generator().manual_seed(1))
    loss = (pred.predicted != y).double()
    oracle = aurc(pred, y, score=loss)
    rand = aurc(pred, y, score=torch.zeros_like(loss))
    for_entropy = aurc(pred, y)
    assert oracle.shape == (5,)
    torch.testing.assert_close(rand, 1 - accuracy(pred, y))
    assert (oracle <= for_entropy + 1e-12).all() and (oracle < rand).all()
    assert (coverage_at_risk(pred, y, 0.0, score=loss) == accuracy(pred, y)).all()
    for s in ("confidence", "mutual_information", "expected_entropy"):
        assert aurc(pred, y, score=s).shape == (5,)


def test_regression_selective_prediction() -> None:
    g = torch.Generator().manual_seed(2)
    sd = torch.linspace(0.1, 3.0, 50, dtype=torch.float64).expand(2, 50).unsqueeze(-1)
    pred = GaussianPredictive(torch.zeros(1, 2, 50, 1, dtype=torch.float64), (sd**2).unsqueeze(0))
    y = sd * torch.randn(2, 50, 1, generator=g, dtype=torch.float64)
    v = aurc(pred, y, score="variance")
    rand = aurc(pred, y, score=torch.zeros(2, 50))
    assert v.shape == (2,) and (v < rand).all()  # referring high-variance points lowers the MSE
    torch.testing.assert_close(aurc(pred, y, score="entropy"), v)
    torch.testing.assert_close(selective_risk(pred, y, 1.0), (y**2).mean((-1, -2)))


def test_auroc_matches_sklearn_including_ties() -> None:
    from sklearn.metrics import roc_auc_score
    rng = np.random.default_rng(3)
    neg = rng.integers(0, 5, 40).astype(float)
    pos = rng.integers(2, 8, 30).astype(float)
    ref = roc_auc_score(np.r_[np.zeros(40), np.ones(30)], np.r_[neg, pos])
    assert float(auroc(torch.from_numpy(neg), torch.from_numpy(pos))) == pytest.approx(ref, abs=1e-12)
    assert float(auroc(torch.zeros(3), torch.ones(2))) == 1.0
    assert float(auroc(torch.ones(3), torch.ones(2))) == 0.5


def test_shift_detection_with_epistemic_score() -> None:
    g = torch.Generator().manual_seed(4)
    agree = torch.randn(1, 30, 20, 4, generator=g).expand(8, 30, 20, 4)  # members agree: MI = 0
    disagree = 3 * torch.randn(8, 30, 20, 4, generator=g)  # members disagree on shifted tasks
    ind, shifted = CategoricalPredictive(logits=agree), CategoricalPredictive(logits=disagree)
    assert float(shift_detection_auroc(ind, shifted)) == 1.0
    assert task_uncertainty(ind).shape == (30,)
    torch.testing.assert_close(task_uncertainty(ind), torch.zeros(30), atol=1e-5, rtol=0)
    both = shift_detection_auroc(ind, ind, score="entropy")
    assert float(both) == 0.5


def test_uncertainty_decomposition_identities() -> None:
    g = torch.Generator().manual_seed(5)
    probs = torch.softmax(torch.randn(6, 3, 7, 5, generator=g, dtype=torch.float64), -1)
    probs[0, 0, 0] = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64)  # exact zeros are fine
    pred = CategoricalPredictive(probs=probs)
    d = uncertainty_decomposition(pred)
    mix = probs.mean(0)
    total = -(torch.special.xlogy(mix, mix)).sum(-1)
    alea = -(torch.special.xlogy(probs, probs)).sum(-1).mean(0)
    torch.testing.assert_close(d["total"], total)
    torch.testing.assert_close(d["aleatoric"], alea)
    torch.testing.assert_close(d["epistemic"], total - alea)
    assert (d["epistemic"] >= 0).all() and torch.isfinite(d["total"]).all()
    torch.testing.assert_close(predictive_entropy(probs), total)  # raw [M, ..., C] tensors work too
    torch.testing.assert_close(expected_entropy(probs), alea)
    torch.testing.assert_close(mutual_information(probs), total - alea)
    # a Gaussian predictive: the epistemic score grows with member disagreement
    base = torch.zeros(4, 1, 2, 1)
    spread = torch.tensor([-1.0, -0.3, 0.3, 1.0]).reshape(4, 1, 1, 1).expand(4, 1, 2, 1)
    gauss_mi = mutual_information(GaussianPredictive(base + spread, torch.ones(4, 1, 2, 1)))
    assert (gauss_mi > 0).all()
    assert (mutual_information(GaussianPredictive(base, torch.ones(4, 1, 2, 1))) == 0).all()
