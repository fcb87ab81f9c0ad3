"""Temperature scaling: recovers a known temperature, matches a 1-d optimizer, keeps predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bayesmeta.metrics import TemperatureScaling, ece, fit_temperature, nll
from bayesmeta.predictive import CategoricalPredictive


def _overconfident(t: int, q: int, c: int, tau: float, seed: int) -> tuple[CategoricalPredictive, torch.Tensor]:
    """Labels drawn from softmax(z); the model reports softmax(tau * z): overconfident by tau."""
    g = torch.Generator().manual_seed(seed)
    z = 1.5 * torch.randn(t, q, c, generator=g, dtype=torch.float64)
    y = torch.multinomial(torch.softmax(z, -1).reshape(-1, c), 1, generator=g).reshape(t, q)
    return CategoricalPredictive(logits=tau * z), y


def test_recovers_the_true_temperature_and_improves_calibration() -> None:
    val, y_val = _overconfident(40, 100, 5, tau=3.0, seed=0)
    test, y_test = _overconfident(40, 100, 5, tau=3.0, seed=1)
    ts = TemperatureScaling.fit(val, y_val)
    # Standard error of the maximum-likelihood temperature, from the Fisher information: with
    # logits u and inverse temperature b, d2/db2 of -log softmax(b u)_y is Var_{c ~ p}(u_c), so
    # I(b) = sum over points of that variance at the true b = 1/3, and se(T) = T^2 se(b).
    u = val.sample_log_probs[0]  # the model's logits up to a per-point shift (softmax-invariant)
    p = torch.softmax(u / 3.0, -1)
    info = float((p * u**2).sum(-1).sub((p * u).sum(-1) ** 2).sum())
    se_t = 9.0 / info**0.5
    assert abs(ts.temperature - 3.0) < 4 * se_t  # 4 standard errors
    assert se_t < 0.1  # ...which is tight enough to tell T = 3 from T = 2.5
    scaled = ts(test)
    assert isinstance(scaled, CategoricalPredictive)
    assert torch.equal(scaled.predicted, test.predicted)
    assert float(ece(scaled, y_test).mean()) < 0.5 * float(ece(test, y_test).mean())
    assert float(nll(scaled, y_test).mean()) < float(nll(test, y_test).mean())


def test_matches_scipy_on_logits_and_mask() -> None:
    from scipy.optimize import minimize_scalar
    pred, y = _overconfident(5, 60, 4, tau=0.5, seed=2)  # underconfident: tau < 1
    logits = pred.sample_log_probs[0]
    mask = torch.rand(5, 60, generator=torch.Generator().manual_seed(3)) < 0.7

    def objective(log_tau: float) -> float:
        lp = torch.log_softmax(logits / np.exp(log_tau), -1)
        return float(-lp.gather(-1, y.unsqueeze(-1)).squeeze(-1)[mask].mean())

    ref = np.exp(minimize_scalar(objective, bounds=(-5, 5), method="bounded", options={"xatol": 1e-10}).x)
    ts = fit_temperature(logits, y, mask=mask)
    assert ts.temperature == pytest.approx(ref, rel=1e-4)
    assert ts.temperature < 1.0
    torch.testing.assert_close(ts.scale_logits(logits), logits / ts.temperature)


def test_mixture_of_members() -> None:
    from scipy.optimize import minimize_scalar
    g = torch.Generator().manual_seed(4)
    z = 1.5 * torch.randn(4, 50, 6, generator=g, dtype=torch.float64)
    y = torch.multinomial(torch.softmax(z, -1).reshape(-1, 6), 1, generator=g).reshape(4, 50)
    members = z + 0.5 * torch.randn(3, 4, 50, 6, generator=g, dtype=torch.float64)
    pred = CategoricalPredictive(logits=4 * members)  # overconfident members that disagree
    ts = TemperatureScaling.fit(pred, y)

    def objective(log_tau: float) -> float:
        return float(nll(TemperatureScaling(float(np.exp(log_tau)))(pred), y).mean())

    res = minimize_scalar(objective, bounds=(-3, 4), method="bounded", options={"xatol": 1e-8})
    best = float(np.exp(res.x))
    assert 1.5 < best < 20  # an interior optimum, found by scipy's bounded Brent search
    assert ts.temperature == pytest.approx(best, rel=1e-3)
    assert objective(float(np.log(ts.temperature))) <= res.fun + 1e-9


def test_identity_and_bad_values() -> None:
    pred, _ = _overconfident(2, 5, 3, tau=1.0, seed=5)
    torch.testing.assert_close(TemperatureScaling(1.0)(pred).probs, pred.probs)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            TemperatureScaling(bad)
