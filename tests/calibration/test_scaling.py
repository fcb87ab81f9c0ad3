"""Variance scaling recovers a known scale and matches scipy; temperature scaling moved but the
old import path still works."""

from __future__ import annotations

import math

import pytest
import torch

from bayesmeta.calibration import TemperatureScaling, VarianceScaling
from bayesmeta.exceptions import InvalidValueError, ShapeError
from bayesmeta.metrics import nll, pit_calibration_error
from bayesmeta.predictive import CategoricalPredictive, GaussianPredictive


def _overconfident(n: int, g: torch.Generator, k: float = 0.5, members: int = 1):
    """y ~ N(mu, s^2); the predictive reports sigma = k * s (split over ``members`` members)."""
    mu = torch.randn(4, n, 1, generator=g, dtype=torch.float64)
    s = 0.3 + torch.rand(4, n, 1, generator=g, dtype=torch.float64)
    y = mu + s * torch.randn(4, n, 1, generator=g, dtype=torch.float64)
    jitter = 0.1 * torch.randn(members, 4, n, 1, generator=g, dtype=torch.float64)
    return GaussianPredictive(mu + jitter, (k * s).pow(2).expand(members, -1, -1, -1).clone()), y


def test_variance_scaling_recovers_the_scale_and_improves_nll() -> None:
    g = torch.Generator().manual_seed(0)
    val, y_val = _overconfident(500, g)
    test, y_test = _overconfident(500, g)
    vs = VarianceScaling().fit(val, y_val)
    # the members' jitter (sd 0.1) adds a little spread, so the fitted s is a bit below 1/k = 2
    assert 1.8 < vs.scale < 2.1
    out = vs(test)
    torch.testing.assert_close(out.mean, test.mean)
    assert float(nll(out, y_test).mean()) < float(nll(test, y_test).mean())
    assert float(pit_calibration_error(out, y_test).mean()) < 0.5 * float(pit_calibration_error(test, y_test).mean())


def test_variance_scaling_matches_scipy_for_a_mixture() -> None:
    from scipy.optimize import minimize_scalar
    g = torch.Generator().manual_seed(1)
    val, y = _overconfident(100, g, members=3)
    mask = torch.rand(4, 100, generator=g) < 0.8

    def objective(log_s: float) -> float:
        mu = val.sample_mean.mean(0, keepdim=True)
        s = math.exp(log_s)
        p = GaussianPredictive(mu + s * (val.sample_mean - mu), val.sample_variance * s * s)
        return float(-p.log_prob(y)[mask].mean())

    ref = minimize_scalar(objective, bounds=(-4, 4), method="bounded", options={"xatol": 1e-10})
    vs = VarianceScaling().fit(val, y, mask)
    assert math.log(vs.scale) == pytest.approx(ref.x, abs=1e-6)


def test_variance_scaling_errors() -> None:
    g = torch.Generator().manual_seed(2)
    val, y = _overconfident(10, g)
    for bad in (0.0, -1.0, float("inf"), True):
        with pytest.raises(InvalidValueError, match="scale"):
            VarianceScaling(bad)
    with pytest.raises(ShapeError, match="targets"):
        VarianceScaling().fit(val, y[:, :3])
    with pytest.raises(InvalidValueError, match="GaussianPredictive"):
        VarianceScaling().fit(CategoricalPredictive(logits=torch.zeros(1, 2, 3)), torch.zeros(1, 2, dtype=torch.long))


def test_temperature_scaling_is_importable_from_both_places() -> None:
    from bayesmeta.metrics import TemperatureScaling as Old
    from bayesmeta.metrics import fit_temperature

    assert Old is TemperatureScaling
    z = torch.randn(2, 30, 4, generator=torch.Generator().manual_seed(3))
    y = torch.randint(0, 4, (2, 30), generator=torch.Generator().manual_seed(4))
    pred = CategoricalPredictive(logits=3 * z)
    fitted = TemperatureScaling().fit(pred, y)  # instance call works like the classmethod
    assert fitted.temperature == fit_temperature(pred, y).temperature
    assert fitted.to_dict() == {"name": "temperature_scaling", "temperature": fitted.temperature}
