"""Clinical metrics cross-checked against scikit-learn task by task (masks and ties included)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bayesmeta.exceptions import InvalidValueError
from bayesmeta.metrics import (
    aggregate_clinical,
    balanced_accuracy,
    clinical_metrics,
    missed_positive_rate,
    npv,
    ppv,
    roc_auc,
    sensitivity,
    sensitivity_at_specificity,
    specificity,
)
from bayesmeta.predictive import CategoricalPredictive


def _data(t=12, n=30, c=2, seed=0, ties=True, masked=True):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(t, n, c, generator=g) * 2
    probs = logits.softmax(-1).double()
    if ties:
        # coarse probabilities: many tied scores, the hard case for AUROC and thresholds
        probs = (probs * 10).round() + 1e-3
        probs = probs / probs.sum(-1, keepdim=True)
    y = torch.randint(0, c, (t, n), generator=g)
    y[:, 0], y[:, 1] = 0, 1  # both classes in every task
    if c > 2:
        y[:, 2 : 2 + c - 2] = torch.arange(2, c)
    mask = torch.rand(t, n, generator=g) > 0.2 if masked else torch.ones(t, n, dtype=torch.bool)
    mask[:, : c] = True
    return probs, y, mask


def _rows(probs, y, mask):
    for i in range(probs.shape[0]):
        m = mask[i].numpy()
        yield probs[i].numpy()[m], y[i].numpy()[m]


@pytest.mark.parametrize("c", [2, 3, 5])
def test_balanced_accuracy_matches_sklearn(c):
    from sklearn.metrics import balanced_accuracy_score
    probs, y, mask = _data(c=c, seed=c)
    ours = balanced_accuracy(probs, y, mask)
    ref = [balanced_accuracy_score(yy, p.argmax(-1)) for p, yy in _rows(probs, y, mask)]
    # same counts, float64: agreement to rounding
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-12)


def test_binary_auroc_and_positive_sets_match_sklearn():
    from sklearn.metrics import roc_auc_score
    probs, y, mask = _data(c=2, seed=1)
    ours = roc_auc(probs, y, mask=mask)
    ref = [roc_auc_score(yy, p[:, 1]) for p, yy in _rows(probs, y, mask)]
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-12)
    probs5, y5, mask5 = _data(c=5, seed=2)
    ours = roc_auc(probs5, y5, positive=[2, 3, 4], mask=mask5)
    ref = [roc_auc_score(np.isin(yy, [2, 3, 4]), p[:, 2:].sum(-1)) for p, yy in _rows(probs5, y5, mask5)]
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-12)


def test_one_vs_rest_auroc_matches_sklearn():
    from sklearn.metrics import roc_auc_score
    probs, y, mask = _data(c=4, seed=3)
    ours = roc_auc(probs, y, mask=mask)
    ref = [
        roc_auc_score(yy, p, multi_class="ovr", average="macro", labels=list(range(4))) for p, yy in _rows(probs, y, mask)
    ]
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-12)


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.8])
def test_threshold_metrics_match_sklearn(threshold):
    from sklearn.metrics import confusion_matrix, precision_score, recall_score
    probs, y, mask = _data(c=3, seed=4)
    pos = [1, 2]
    res = clinical_metrics(probs, y, mask, positive=pos, threshold=threshold)
    for i, (p, yy) in enumerate(_rows(probs, y, mask)):
        truth = np.isin(yy, pos).astype(int)
        call = (p[:, pos].sum(-1) >= threshold).astype(int)
        tn, fp, fn, tp = confusion_matrix(truth, call, labels=[0, 1]).ravel()
        assert res["sensitivity"][i] == pytest.approx(recall_score(truth, call, zero_division=np.nan), nan_ok=True)
        assert res["specificity"][i] == pytest.approx(recall_score(1 - truth, 1 - call, zero_division=np.nan), nan_ok=True)
        assert res["ppv"][i] == pytest.approx(precision_score(truth, call, zero_division=np.nan), nan_ok=True)
        assert res["npv"][i] == pytest.approx(precision_score(1 - truth, 1 - call, zero_division=np.nan), nan_ok=True)
        assert res["missed_positive_rate"][i] == pytest.approx(fn / len(truth))
        assert res["prevalence"][i] == pytest.approx(truth.mean())
    # the standalone functions give the same numbers as the bundle
    torch.testing.assert_close(sensitivity(probs, y, threshold, pos, mask), res["sensitivity"])
    torch.testing.assert_close(specificity(probs, y, threshold, pos, mask), res["specificity"])
    torch.testing.assert_close(missed_positive_rate(probs, y, threshold, pos, mask), res["missed_positive_rate"])


def test_ppv_npv_at_a_given_prevalence_follow_bayes_rule():
    probs, y, mask = _data(c=2, seed=5)
    sens = sensitivity(probs, y, mask=mask)
    spec = specificity(probs, y, mask=mask)
    for pi in (0.05, 0.3):
        got_ppv, got_npv = ppv(probs, y, prevalence=pi, mask=mask), npv(probs, y, prevalence=pi, mask=mask)
        # independent route: counts per 10,000 patients at prevalence pi
        tp, fp = sens * pi * 1e4, (1 - spec) * (1 - pi) * 1e4
        tn, fn = spec * (1 - pi) * 1e4, (1 - sens) * pi * 1e4
        torch.testing.assert_close(got_ppv, tp / (tp + fp), equal_nan=True)
        torch.testing.assert_close(got_npv, tn / (tn + fn), equal_nan=True)
    # at the episode's own prevalence the formula equals TP / (TP + FP)
    own = float(y[mask].eq(1).double().mean())
    assert ppv(probs[:1], y[:1], mask=mask[:1]).item() == pytest.approx(
        ppv(probs[:1], y[:1], prevalence=float(y[0][mask[0]].eq(1).double().mean()), mask=mask[:1]).item()
    )
    assert 0 < own < 1


@pytest.mark.parametrize("target", [0.5, 0.8, 0.9, 0.95])
def test_sensitivity_at_specificity_matches_sklearn_roc_curve(target):
    from sklearn.metrics import roc_curve
    probs, y, mask = _data(c=2, seed=6, t=20)
    ours = sensitivity_at_specificity(probs, y, target, mask=mask)
    for i, (p, yy) in enumerate(_rows(probs, y, mask)):
        fpr, tpr, _ = roc_curve(yy, p[:, 1], drop_intermediate=False)
        ref = tpr[1 - fpr >= target - 1e-12].max()
        assert ours[i].item() == pytest.approx(ref, abs=1e-12)


def test_predictive_input_and_undefined_values():
    probs, y, mask = _data(c=2, seed=7, t=3, masked=False)
    pred = CategoricalPredictive(probs=probs.unsqueeze(0).float())
    torch.testing.assert_close(balanced_accuracy(pred, y), balanced_accuracy(probs.float(), y))
    # a task with no positive case: sensitivity and AUROC are undefined (NaN), not 0 or 1
    y0 = y.clone()
    y0[0] = 0
    assert math.isnan(sensitivity(probs, y0)[0].item()) and math.isnan(roc_auc(probs, y0)[0].item())
    res = clinical_metrics(probs, y0)
    agg = aggregate_clinical(res)
    assert agg["sensitivity"].n == 2 and agg["specificity"].n == 3
    assert agg["sensitivity"].mean == pytest.approx(float(res["sensitivity"][1:].mean()))


def test_bad_arguments_are_named():
    probs, y, _ = _data(c=2, seed=8, t=2, masked=False)
    with pytest.raises(InvalidValueError, match="positive"):
        sensitivity(probs, y, positive=2)
    with pytest.raises(InvalidValueError, match="positive.*nothing is negative"):
        sensitivity(probs, y, positive=[0, 1])
    with pytest.raises(InvalidValueError, match="threshold"):
        sensitivity(probs, y, threshold=1.5)
    with pytest.raises(InvalidValueError, match="specificity"):
        sensitivity_at_specificity(probs, y, specificity=90)
    with pytest.raises(InvalidValueError, match="prevalence"):
        ppv(probs, y, prevalence=2.0)
    with pytest.raises(InvalidValueError, match="targets"):
        balanced_accuracy(probs, y + 5)
