"""Split conformal: coverage of miscalibrated predictives over many repetitions, pooling across
tasks, Mondrian sets, hand-computed scores, errors, and a cross-check against MAPIE.

Tolerances of the repeated-coverage tests. Each repetition r draws fresh calibration and test
points and measures the test coverage c_r. Split conformal promises E[c_r] in
[1 - alpha, 1 - alpha + 1/(n+1)] (the upper end for scores without ties), where the expectation is
over calibration and test draws. The mean of R independent repetitions has standard error
se = sd(c_r) / sqrt(R), with sd(c_r) combining the Beta-distributed coverage of a fixed qhat
(variance ~ k(n+1-k)/((n+1)^2 (n+2)), about 0.03^2 for n = 100) and the binomial noise of the
N_test test points (about 0.009^2). We estimate sd(c_r) from the repetitions themselves and allow
3 standard errors on each side: a correct implementation fails with probability ~0.1% per bound;
a wrong quantile level (the uncorrected ceil(n(1-alpha)), or an off-by-one k) moves the mean
by 1/(n+1) = 0.0099, more than 3 se = 3 * 0.031 / sqrt(400) = 0.005.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bayesmeta.calibration import (
    SplitConformal,
    conformal_metrics,
    conformal_quantile,
    min_calibration_points,
)
from bayesmeta.calibration.scores import class_scores
from bayesmeta.exceptions import BayesMetaError, DataError, InvalidValueError, ShapeError
from bayesmeta.predictive import CategoricalPredictive, GaussianPredictive

ALPHA = 0.1
N_CAL = 100  # k = ceil(101 * 0.9) = 91: expected coverage 91/101 = 0.901; the uncorrected
# ceil(n (1 - alpha)) = 90 would give 90/101 = 0.891, more than 3 se below 0.9
N_TEST = 1000
REPS = 400


def _class_data(n: int, c: int, tau: float, g: torch.Generator, task_effect: float = 0.0, tasks: int = 1):
    """Labels from softmax(z); the predictive reports softmax(tau * z) (tau > 1: overconfident).

    With ``task_effect > 0``, every task gets its own miscalibration tau * exp(task_effect * eps).
    """
    z = 1.5 * torch.randn(tasks, n, c, generator=g, dtype=torch.float64)
    y = torch.multinomial(torch.softmax(z, -1).reshape(-1, c), 1, generator=g).reshape(tasks, n)
    t = tau * torch.exp(task_effect * torch.randn(tasks, 1, 1, generator=g, dtype=torch.float64))
    return CategoricalPredictive(logits=t * z), y


def _regression_data(n: int, g: torch.Generator, sigma_scale: float, tasks: int = 1, task_effect: float = 0.0):
    """Heteroscedastic targets y ~ N(mu, s^2) with a skewed shift; the predictive reports
    N(mu, (sigma_scale * s)^2) (sigma_scale < 1: overconfident intervals)."""
    mu = torch.randn(tasks, n, 1, generator=g, dtype=torch.float64)
    s = 0.2 + torch.rand(tasks, n, 1, generator=g, dtype=torch.float64)
    shift = task_effect * torch.randn(tasks, 1, 1, generator=g, dtype=torch.float64)
    y = mu + shift + s * torch.randn(tasks, n, 1, generator=g, dtype=torch.float64)
    return GaussianPredictive(mu, (sigma_scale * s) ** 2), y


def _check_mean_coverage(cov: list[float], n: int, alpha: float = ALPHA) -> None:
    c = np.asarray(cov)
    se = c.std(ddof=1) / math.sqrt(c.size)
    assert c.mean() >= 1 - alpha - 3 * se, (c.mean(), se)
    assert c.mean() <= 1 - alpha + 1 / (n + 1) + 3 * se, (c.mean(), se)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"score": "lac"},
        {"score": "aps"},
        {"score": "aps", "randomized": True},
        {"score": "raps", "k_reg": 1, "lam": 0.05},
        {"score": "raps", "k_reg": 2, "lam": 0.2, "randomized": True},
    ],
    ids=["lac", "aps", "aps-randomized", "raps", "raps-randomized"],
)
def test_classification_coverage_of_a_miscalibrated_predictive(kwargs: dict) -> None:
    g = torch.Generator().manual_seed(0)
    cov = []
    for r in range(REPS):
        cal, y_cal = _class_data(N_CAL, 5, 3.0, g)
        test, y_test = _class_data(N_TEST, 5, 3.0, g)
        cp = SplitConformal(alpha=ALPHA, seed=r, **kwargs).fit(cal, y_cal)
        sets = cp.predict(test)
        assert sets.shape == (1, N_TEST, 5) and sets.dtype == torch.bool
        cov.append(float(sets.gather(-1, y_test.unsqueeze(-1)).float().mean()))
    _check_mean_coverage(cov, N_CAL)


def test_the_raw_predictive_is_miscalibrated_so_the_coverage_test_means_something() -> None:
    # The top-90% mass set of the overconfident predictive (no conformal step) covers far less.
    g = torch.Generator().manual_seed(1)
    test, y = _class_data(5000, 5, 3.0, g)
    naive = class_scores(test.probs, "aps") <= 1 - ALPHA
    assert float(naive[0].gather(-1, y[0].unsqueeze(-1)).float().mean()) < 0.8


def test_mondrian_coverage_holds_per_class_on_imbalanced_classes() -> None:
    # Class 0 holds most points and is predicted well; class 4 is rare and badly predicted.
    # Marginal LAC under-covers the rare class; Mondrian covers every class at >= 1 - alpha.
    g = torch.Generator().manual_seed(2)
    c, n = 5, 800  # the rare class gets ~24 calibration points (9 needed)
    per_class_m = [[] for _ in range(c)]
    per_class_b = [[] for _ in range(c)]
    prior = torch.tensor([0.6, 0.15, 0.12, 0.1, 0.03], dtype=torch.float64)
    for _ in range(150):
        def draw(k: int):
            y = torch.multinomial(prior, k, replacement=True, generator=g).unsqueeze(0)
            z = torch.randn(1, k, c, generator=g, dtype=torch.float64) + prior.log() * 2
            z = z + 1.0 * torch.nn.functional.one_hot(y, c).double() * (y != 4).unsqueeze(-1)
            return CategoricalPredictive(logits=3 * z), y
        cal, y_cal = draw(n)
        test, y_test = draw(2000)
        for by_class, store in ((False, per_class_m), (True, per_class_b)):
            sets = SplitConformal(ALPHA, "lac", by_class=by_class).fit(cal, y_cal).predict(test)
            hit = sets.gather(-1, y_test.unsqueeze(-1)).squeeze(-1)[0]
            for k in range(c):
                store[k].append(float(hit[y_test[0] == k].float().mean()))
    rare_marginal = np.mean(per_class_m[4])
    assert rare_marginal < 1 - ALPHA - 0.1  # the failure Mondrian exists for
    for k in range(c):
        v = np.asarray(per_class_b[k])
        # class k has ~n * prior_k calibration points; the lower bound 1 - alpha holds per class
        assert v.mean() >= 1 - ALPHA - 3 * v.std(ddof=1) / math.sqrt(v.size), (k, v.mean())


@pytest.mark.parametrize("score", ["normalized", "absolute", "cqr"])
def test_regression_coverage_of_a_miscalibrated_predictive(score: str) -> None:
    g = torch.Generator().manual_seed(3)
    cov = []
    for _ in range(REPS):
        cal, y_cal = _regression_data(N_CAL, g, sigma_scale=0.4)
        test, y_test = _regression_data(N_TEST, g, sigma_scale=0.4)
        cp = SplitConformal(alpha=ALPHA, score=score).fit(cal, y_cal)
        iv = cp.predict(test)
        assert iv.shape == (1, N_TEST, 1, 2)
        assert bool((iv[..., 0] <= iv[..., 1]).all())
        cov.append(float(((y_test >= iv[..., 0]) & (y_test <= iv[..., 1])).double().mean()))
    _check_mean_coverage(cov, N_CAL)
    # and the raw 90% interval of the overconfident predictive covers far less
    lo, hi = test.interval(0.9)
    assert float(((y_test >= lo) & (y_test <= hi)).double().mean()) < 0.6


def test_score_aliases() -> None:
    assert SplitConformal(score="quantile").score == "cqr"
    assert SplitConformal(score="normalized_residual").score == "normalized"
    assert SplitConformal(score="residual").score == "absolute"


def test_normalized_intervals_adapt_to_the_predictive_scale() -> None:
    g = torch.Generator().manual_seed(4)
    cal, y_cal = _regression_data(500, g, sigma_scale=0.5)
    test, _ = _regression_data(200, g, sigma_scale=0.5)
    iv = SplitConformal(ALPHA, "normalized").fit(cal, y_cal).predict(test)
    width = iv[..., 1] - iv[..., 0]
    ratio = width / test.stddev
    torch.testing.assert_close(ratio, torch.full_like(ratio, float(ratio.flatten()[0])))  # width ∝ sigma


def test_cqr_follows_a_skewed_mixture() -> None:
    # A two-member mixture is skewed: CQR's interval is asymmetric about the mean, normalized's is not.
    mean = torch.tensor([0.0, 3.0], dtype=torch.float64).view(2, 1, 1, 1).expand(2, 1, 50, 1).clone()
    mean[1] += torch.linspace(0, 1, 50, dtype=torch.float64).view(1, 50, 1)
    var = torch.tensor([0.1, 1.0], dtype=torch.float64).view(2, 1, 1, 1).expand(2, 1, 50, 1).clone()
    pred = GaussianPredictive(mean, var)
    y = pred.sample(1, torch.Generator().manual_seed(0))[0]
    iv = SplitConformal(0.2, "cqr").fit(pred, y).predict(pred)
    mu = pred.mean
    assert bool(((iv[..., 1] - mu) > (mu - iv[..., 0])).all())


# ----------------------------------------------------------------------------- across tasks
def test_calibration_points_are_pooled_over_calibration_tasks() -> None:
    g = torch.Generator().manual_seed(5)
    cal, y = _class_data(20, 4, 2.0, g, task_effect=0.5, tasks=15)
    mask = torch.rand(15, 20, generator=g) < 0.7
    a = SplitConformal(ALPHA, "aps").fit(cal, y, mask)
    assert a.n_calibration_ == int(mask.sum())
    # the same points as one flat "task": same quantile
    flat = CategoricalPredictive(logits=cal.sample_log_probs[:, mask].unsqueeze(1))
    b = SplitConformal(ALPHA, "aps").fit(flat, y[mask].unsqueeze(0))
    assert torch.equal(a.qhat_, b.qhat_)
    # by hand: the ceil((n+1)(1-alpha))-th smallest true-label score
    s = class_scores(cal.probs, "aps").gather(-1, y.unsqueeze(-1)).squeeze(-1)[mask]
    k = math.ceil((s.numel() + 1) * (1 - ALPHA))
    assert float(a.qhat_) == float(torch.sort(s).values[k - 1])


def test_marginal_coverage_over_exchangeable_tasks_with_task_effects() -> None:
    """Fisch et al. (2021): calibrate on the query points of many tasks, test on new tasks.

    Each task has its own miscalibration (tau * exp(0.7 eps)), so a task's coverage varies; the
    guarantee is marginal per query point over tasks. Calibration: 60 tasks x 10 query points;
    the document's worst-case shortfall of pooling is ~1/(T+1) = 0.016, the bound checked is
    1 - alpha within 3 se (the points of a task are not independent, so the spread between
    repetitions is wider than the i.i.d. case, and se is estimated from the repetitions).
    """
    g = torch.Generator().manual_seed(6)
    cov, per_task_sd = [], []
    for _ in range(300):
        cal, y_cal = _class_data(10, 5, 2.0, g, task_effect=0.7, tasks=60)
        test, y_test = _class_data(10, 5, 2.0, g, task_effect=0.7, tasks=100)
        sets = SplitConformal(ALPHA, "lac").fit(cal, y_cal).predict(test)
        m = conformal_metrics(sets, y_test)
        cov.append(float(m["conformal_coverage"].mean()))
        per_task_sd.append(float(m["conformal_coverage"].std()))
    c = np.asarray(cov)
    se = c.std(ddof=1) / math.sqrt(c.size)
    assert c.mean() >= 1 - ALPHA - 3 * se
    assert c.mean() <= 1 - ALPHA + 1 / (600 + 1) + 3 * se
    assert np.mean(per_task_sd) > 0.05  # per-task coverage really varies: the guarantee is marginal


# ----------------------------------------------------------------------------- finite-sample level
def test_quantile_level_and_minimum_calibration_size() -> None:
    assert min_calibration_points(0.1) == 9
    assert min_calibration_points(0.05) == 19
    assert min_calibration_points(0.3) == 3
    s = torch.arange(1.0, 10.0)  # n = 9, alpha = 0.1: k = ceil(10 * 0.9) = 9 -> the largest
    assert float(conformal_quantile(s, 0.1)) == 9.0
    s = torch.arange(1.0, 20.0)  # n = 19, alpha = 0.3: k = ceil(20 * 0.7) = 14 (not 15 by float error)
    assert float(conformal_quantile(s, 0.3)) == 14.0
    with pytest.raises(DataError, match="at least 9 points"):
        conformal_quantile(torch.arange(8.0), 0.1)


# ----------------------------------------------------------------------------- errors
def test_errors_are_clear() -> None:
    g = torch.Generator().manual_seed(7)
    pred, y = _class_data(30, 4, 1.0, g)
    for bad in (0.0, 1.0, -0.1, 1.5, float("nan"), True):
        with pytest.raises(InvalidValueError, match="alpha"):
            SplitConformal(alpha=bad)
    with pytest.raises(InvalidValueError, match="score"):
        SplitConformal(score="softmax")
    with pytest.raises(InvalidValueError, match="before predict"):
        SplitConformal().predict(pred)
    with pytest.raises(DataError, match="at least 19 points for alpha=0.05.*got 5"):
        SplitConformal(0.05).fit(CategoricalPredictive(logits=pred.sample_log_probs[:, :, :5]), y[:, :5])
    with pytest.raises(ShapeError, match="targets"):
        SplitConformal().fit(pred, y[:, :10])
    with pytest.raises(ShapeError, match="mask"):
        SplitConformal().fit(pred, y, torch.ones(1, 10, dtype=torch.bool))
    cp = SplitConformal().fit(pred, y)
    with pytest.raises(ShapeError, match="expected 4 classes"):
        cp.predict(CategoricalPredictive(logits=torch.zeros(1, 3, 5)))
    with pytest.raises(InvalidValueError, match="GaussianPredictive"):
        cp.predict(GaussianPredictive(torch.zeros(1, 3, 1), torch.ones(1, 3, 1)))
    with pytest.raises(InvalidValueError, match="regression score"):
        SplitConformal(score="cqr").fit(pred, y)
    with pytest.raises(InvalidValueError, match="Mondrian"):
        SplitConformal(by_class=True).fit(GaussianPredictive(torch.zeros(1, 30, 1), torch.ones(1, 30, 1)), torch.zeros(1, 30, 1))
    big, y_big = _class_data(400, 4, 1.0, g)
    y_big[y_big == 3] = 0
    y_big[0, :5] = 3  # five points of class 3: too few for its own quantile
    with pytest.raises(DataError, match="class 3: expected at least 9 points.*got 5"):
        SplitConformal(by_class=True).fit(big, y_big)
    with pytest.raises(BayesMetaError):
        SplitConformal().fit(pred, y.float())


def test_randomized_sets_are_reproducible_and_smaller() -> None:
    g = torch.Generator().manual_seed(8)
    cal, y = _class_data(500, 6, 2.0, g)
    test, _ = _class_data(500, 6, 2.0, g)
    a = SplitConformal(ALPHA, "aps", randomized=True, seed=3).fit(cal, y).predict(test)
    b = SplitConformal(ALPHA, "aps", randomized=True, seed=3).fit(cal, y).predict(test)
    assert torch.equal(a, b)
    det = SplitConformal(ALPHA, "aps").fit(cal, y).predict(test)
    assert float(a.sum(-1).double().mean()) < float(det.sum(-1).double().mean())


def test_raps_scores_by_hand() -> None:
    p = torch.tensor([[0.1, 0.5, 0.15, 0.25]], dtype=torch.float64)
    # ranks: class1 (1), class3 (2), class2 (3), class0 (4)
    s = class_scores(p, "raps", None, k_reg=1, lam=0.1)
    want = torch.tensor([[1.0 + 0.3, 0.5, 0.9 + 0.2, 0.75 + 0.1]], dtype=torch.float64)
    torch.testing.assert_close(s, want)
    u = torch.tensor([0.5], dtype=torch.float64)
    s = class_scores(p, "aps", u)
    torch.testing.assert_close(s, torch.tensor([[0.95, 0.25, 0.825, 0.625]], dtype=torch.float64))


# ----------------------------------------------------------------------------- peer: MAPIE
@pytest.fixture
def mapie():
    """The peer, imported when a test needs it (importing sklearn at collection costs ~1.5 s)."""
    return pytest.importorskip("mapie", reason="MAPIE is the dev-extra peer for conformal prediction")


def _probs_estimator(c: int):
    from sklearn.base import BaseEstimator, ClassifierMixin

    class _Probs(ClassifierMixin, BaseEstimator):
        """A 'prefit' classifier whose input rows are its own predicted probabilities."""

        def fit(self, x, y):
            self.classes_ = np.arange(c)
            self.n_features_in_ = x.shape[1]
            return self

        def predict_proba(self, x):
            return np.asarray(x)

        def predict(self, x):
            return np.asarray(x).argmax(1)

    return _Probs().fit(np.eye(c), np.arange(c))


def _mapie_data(seed: int, n: int = 600, c: int = 5):
    rng = np.random.default_rng(seed)
    z = 2.0 * rng.normal(size=(n, c))
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = np.array([rng.choice(c, p=row) for row in p])
    return p, y


def test_lac_sets_match_mapie(mapie) -> None:
    from mapie.classification import SplitConformalClassifier

    p, y = _mapie_data(0)
    m = SplitConformalClassifier(_probs_estimator(5), confidence_level=0.9, conformity_score="lac", prefit=True)
    m.conformalize(p[:300], y[:300])
    _, ref = m.predict_set(p[300:])
    cp = SplitConformal(0.1, "lac").fit(CategoricalPredictive(probs=torch.tensor(p[:300])[None]), torch.tensor(y[:300])[None])
    ours = cp.predict(CategoricalPredictive(probs=torch.tensor(p[300:])[None]))[0].numpy()
    np.testing.assert_array_equal(ours, ref[:, :, 0])


def test_aps_scores_match_mapie(mapie) -> None:
    from mapie.classification import SplitConformalClassifier

    p, y = _mapie_data(1)
    m = SplitConformalClassifier(
        _probs_estimator(5), confidence_level=0.9, conformity_score="aps", prefit=True, random_state=11
    )
    m.conformalize(p, y)
    ref = np.asarray(m._mapie_classifier.conformity_scores_).reshape(-1)
    # MAPIE's randomized APS score is cumsum_through(y) - u * p_y, i.e. ours with u' = 1 - u
    u = np.random.RandomState(11).uniform(size=len(p))
    ours = class_scores(torch.tensor(p), "aps", torch.tensor(1.0 - u)).gather(-1, torch.tensor(y)[:, None])[:, 0]
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=1e-12)


def test_absolute_intervals_match_mapie(mapie) -> None:
    from mapie.regression import SplitConformalRegressor
    from sklearn.base import BaseEstimator, RegressorMixin

    class _Mean(RegressorMixin, BaseEstimator):
        def fit(self, x, y):
            self.n_features_in_ = 1
            return self

        def predict(self, x):
            return np.asarray(x)[:, 0]

    rng = np.random.default_rng(2)
    mu = rng.normal(size=400)
    y = mu + rng.standard_t(3, size=400)
    m = SplitConformalRegressor(_Mean().fit(mu[:, None], y), confidence_level=0.9, conformity_score="absolute", prefit=True)
    m.conformalize(mu[:200, None], y[:200])
    _, ref = m.predict_interval(mu[200:, None])
    pred = lambda a: GaussianPredictive(torch.tensor(a).view(1, -1, 1), torch.ones(1, len(a), 1, dtype=torch.float64))  # noqa: E731
    cp = SplitConformal(0.1, "absolute").fit(pred(mu[:200]), torch.tensor(y[:200]).view(1, -1, 1))
    ours = cp.predict(pred(mu[200:]))[0, :, 0].numpy()
    np.testing.assert_allclose(ours, ref[:, :, 0], rtol=0, atol=1e-9)
