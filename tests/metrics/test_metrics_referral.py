"""Referral rules fitted on validation episodes, applied to test episodes; decision curves; default scores."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from bayesmeta.exceptions import InvalidValueError
from bayesmeta.metrics import (
    decision_curve,
    default_score,
    fit_referral_rule,
    predictive_entropy,
    shift_detection_auroc,
)
from bayesmeta.predictive import CategoricalPredictive


def _episodes(seed, t=15, q=20, c=2, m=1):
    """Predictions whose confidence tracks correctness, so referral helps; coarse logits give ties."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, c, (t, q), generator=g)
    strength = torch.rand(t, q, generator=g) * 4
    logits = torch.randn(m, t, q, c, generator=g) * 0.5
    sign = torch.where(torch.rand(t, q, generator=g) < 0.8, 1.0, -1.0)
    logits = logits + (sign * strength).unsqueeze(-1) * torch.nn.functional.one_hot(y, c)
    return CategoricalPredictive(logits=(logits * 2).round() / 2), y


def _brute(pred, y, tau, costs=None):
    """Pooled outcome of keeping entropy <= tau, by a plain numpy loop."""
    ent = predictive_entropy(pred).double().reshape(-1).numpy()
    p = pred.probs.reshape(-1, pred.n_classes).double().numpy()
    yy = y.reshape(-1).numpy()
    keep = ent <= tau
    call = p[:, 1] >= 0.5
    truth = yy == 1
    acc = float((p.argmax(1) == yy)[keep].mean()) if keep.any() else math.nan
    fn = np.sum(keep & truth & ~call)
    fp = np.sum(keep & ~truth & call)
    cost = None if costs is None else (costs["missed_positive"] * fn + costs["false_alarm"] * fp + costs["referral"] * np.sum(~keep)) / len(yy)
    return acc, float(np.mean(~keep)), cost, ent


def test_accuracy_objective_is_the_fewest_referrals_reaching_the_target():
    pred, y = _episodes(0)
    rule = fit_referral_rule(pred, y, objective="accuracy", target_accuracy=0.9)
    assert rule.score == "entropy"
    ent = _brute(pred, y, 0)[3]
    feasible = [tau for tau in np.unique(ent) if _brute(pred, y, tau)[0] >= 0.9]
    assert rule.tau == pytest.approx(max(feasible))
    acc, ref, _, _ = _brute(pred, y, rule.tau)
    assert rule.validation["retained_accuracy"] == pytest.approx(acc)
    assert rule.validation["referral_rate"] == pytest.approx(ref)
    assert 0 < ref < 1


def test_referral_rate_objective_refers_at_most_the_budget():
    pred, y = _episodes(1)
    rule = fit_referral_rule(pred, y, objective="referral_rate", max_referral=0.2)
    _, ref, _, ent = _brute(pred, y, rule.tau)
    assert ref <= 0.2 + 1e-12
    lower = np.unique(ent)[np.unique(ent) < rule.tau]
    if lower.size:  # the next lower threshold would exceed the budget
        assert _brute(pred, y, lower.max())[1] > 0.2


def test_cost_objective_minimizes_expected_cost():
    pred, y = _episodes(2)
    costs = {"missed_positive": 10.0, "false_alarm": 1.0, "referral": 0.5}
    rule = fit_referral_rule(pred, y, objective="cost", costs=costs)
    ent = _brute(pred, y, 0)[3]
    best = min(_brute(pred, y, tau, costs)[2] for tau in [-math.inf, *np.unique(ent)])
    assert rule.validation["expected_cost"] == pytest.approx(best)
    # free referral: the rule refers until no retained error is left (cost 0), and no further
    free = fit_referral_rule(pred, y, objective="cost", costs={"missed_positive": 10, "false_alarm": 10, "referral": 0})
    assert free.validation["expected_cost"] == 0.0 and free.validation["referral_rate"] < 1.0


def test_rule_applied_to_test_episodes_per_task_with_cis():
    val, yv = _episodes(3)
    test, yt = _episodes(4, t=25)
    rule = fit_referral_rule(val, yv, objective="accuracy", target_accuracy=0.9)
    out = rule.evaluate(test, yt)
    ent = predictive_entropy(test)
    for t in range(25):
        keep = ent[t] <= rule.tau
        ref = 1 - keep.double().mean()
        assert out.per_task["referral_rate"][t] == pytest.approx(float(ref))
        if keep.any():
            acc = (test.probs[t].argmax(-1) == yt[t])[keep].double().mean()
            assert out.per_task["retained_accuracy"][t] == pytest.approx(float(acc))
            kp = keep & (yt[t] == 1)
            if kp.any():
                sens = (test.probs[t, :, 1] >= 0.5)[kp].double().mean()
                assert out.per_task["retained_sensitivity"][t] == pytest.approx(float(sens))
    s = out.summary["referral_rate"]
    assert s.low <= s.mean <= s.high and s.n == 25
    assert out.pooled["referral_rate"] == pytest.approx(float((ent > rule.tau).double().mean()))
    assert rule.refer(test, yt).shape == (25, 20)


def test_unreachable_target_refers_everything_with_a_warning():
    # uniform predictions: 50% accurate whatever is referred (and a constant score)
    pred, y = CategoricalPredictive(logits=torch.zeros(1, 3, 4, 2)), torch.tensor([[0, 1, 0, 1]] * 3)
    with pytest.warns(UserWarning, match="no threshold reaches"):
        rule = fit_referral_rule(pred, y, target_accuracy=0.9)
    assert rule.tau == -math.inf and rule.validation["referral_rate"] == 1.0


def test_constant_scores_warn_and_defaults_fit_the_learner():
    point, y = _episodes(6, m=1)
    particles, _ = _episodes(6, m=5)
    assert default_score(point) == "entropy" and default_score(point, "shift") == "entropy"
    assert default_score(particles, "shift") == "mutual_information"
    with pytest.warns(UserWarning, match=r"mutual_information.*constant.*point-estimate"):
        fit_referral_rule(point, y, objective="referral_rate", max_referral=0.1, score="mutual_information")
    with pytest.warns(UserWarning, match="constant"):
        shift_detection_auroc(point, point, score="mutual_information")
    # the default for point estimates is entropy: it ranks, so no warning and a real AUROC
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = shift_detection_auroc(point, _episodes(7, m=1)[0])
    assert 0.0 <= float(a) <= 1.0


def test_bad_referral_arguments():
    pred, y = _episodes(8)
    with pytest.raises(InvalidValueError, match="target_accuracy"):
        fit_referral_rule(pred, y, objective="accuracy")
    with pytest.raises(InvalidValueError, match="max_referral"):
        fit_referral_rule(pred, y, objective="referral_rate", max_referral=1.5)
    with pytest.raises(InvalidValueError, match="costs: expected exactly the keys"):
        fit_referral_rule(pred, y, objective="cost", costs={"missed": 1})
    with pytest.raises(InvalidValueError, match="objective"):
        fit_referral_rule(pred, y, objective="coverage")
    with pytest.raises(InvalidValueError, match=r"costs\['referral'\]"):
        fit_referral_rule(pred, y, objective="cost", costs={"missed_positive": 1, "false_alarm": 1, "referral": -1})


def test_decision_curve_against_a_per_task_loop():
    pred, y = _episodes(9, t=6)
    pts = [0.1, 0.3, 0.5, 0.8]
    dc = decision_curve(pred, y, pts)
    p1 = pred.probs[..., 1].double().numpy()
    yy = y.numpy()
    per = np.zeros((6, 4))
    for t in range(6):
        for k, pt in enumerate(pts):
            call = p1[t] >= pt
            tp = np.sum(call & (yy[t] == 1))
            fp = np.sum(call & (yy[t] == 0))
            per[t, k] = tp / 20 - fp / 20 * pt / (1 - pt)
    np.testing.assert_allclose(dc.per_task.numpy(), per, atol=1e-12)
    np.testing.assert_allclose(dc.net_benefit.numpy(), per.mean(0), atol=1e-12)
    pi = (yy == 1).mean(1)
    ref_all = np.mean([pi - (1 - pi) * pt / (1 - pt) for pt in pts], axis=1)
    np.testing.assert_allclose(dc.treat_all.numpy(), [np.mean(pi - (1 - pi) * pt / (1 - pt)) for pt in pts], atol=1e-12)
    assert ref_all.shape == (4,)
    assert torch.equal(dc.treat_none, torch.zeros(4, dtype=torch.float64))
    with pytest.raises(InvalidValueError, match="thresholds"):
        decision_curve(pred, y, [0.0, 0.5])
