"""Bad input raises a BayesMetaError that names the argument."""

from __future__ import annotations

import pytest
import torch

from bayesmeta.exceptions import BayesMetaError, InvalidValueError, ShapeError
from bayesmeta.metrics import (
    TemperatureScaling,
    accuracy_at_coverage,
    aurc,
    brier_score,
    coverage,
    crps,
    ece,
    interval_coverage,
    mce,
    mse,
    nll,
    pit_calibration_error,
    reliability_diagram,
    task_metrics,
)
from bayesmeta.predictive import CategoricalPredictive, GaussianPredictive

P = torch.tensor([[0.2, 0.8], [0.6, 0.4], [0.5, 0.5]], dtype=torch.float64)
Y = torch.tensor([1, 0, 1])


@pytest.mark.parametrize("fn", [ece, mce, brier_score, nll, aurc])
@pytest.mark.parametrize(
    "probs, targets, err, name",
    [
        (torch.tensor([[0.2, 0.7], [0.6, 0.4], [0.5, 0.5]]), Y, InvalidValueError, "probs"),  # sums to 0.9
        (torch.tensor([[-0.2, 1.2], [0.6, 0.4], [0.5, 0.5]]), Y, InvalidValueError, "probs"),  # negative
        (torch.tensor([[float("nan"), 0.8], [0.6, 0.4], [0.5, 0.5]]), Y, InvalidValueError, "probs"),
        (P, torch.tensor([1, 0]), ShapeError, "targets"),
        (P, torch.tensor([1, 0, 2]), InvalidValueError, "targets"),  # label out of range
        (P, torch.tensor([1.0, 0.0, 1.0]), InvalidValueError, "targets"),  # float labels
        (P[:, :1].squeeze(-1), Y, ShapeError, "probs"),  # no class dim
        (P[:0], Y[:0], ShapeError, "targets"),  # no points
    ],
)
def test_bad_classification_inputs(fn, probs, targets, err, name) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(err, match=f"^{name}:") as info:
        fn(probs, targets)
    assert isinstance(info.value, BayesMetaError)


@pytest.mark.parametrize("fn", [ece, mce, reliability_diagram])
@pytest.mark.parametrize("n_bins", [0, -3, 2.5, True])
def test_bad_n_bins(fn, n_bins) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidValueError, match="^n_bins:"):
        fn(P, Y, n_bins=n_bins)


def test_bad_binning_and_mask() -> None:
    with pytest.raises(InvalidValueError, match="^binning:"):
        ece(P, Y, binning="quantile")  # type: ignore[arg-type]
    with pytest.raises(ShapeError, match="^mask:"):
        ece(P, Y, mask=torch.ones(2, dtype=torch.bool))
    with pytest.raises(InvalidValueError, match="^mask:"):
        ece(P, Y, mask=torch.ones(3))
    with pytest.raises(InvalidValueError, match="^mask:"):
        ece(P.unsqueeze(0), Y.unsqueeze(0), mask=torch.zeros(1, 3, dtype=torch.bool))


MEAN = torch.zeros(4, 2, dtype=torch.float64)
VAR = torch.ones(4, 2, dtype=torch.float64)
YR = torch.zeros(4, 2, dtype=torch.float64)


@pytest.mark.parametrize("fn", [nll, mse, crps, pit_calibration_error, coverage])
@pytest.mark.parametrize(
    "mean, var, y, err, name",
    [
        (MEAN, -VAR, YR, InvalidValueError, "variance"),
        (MEAN, VAR * 0, YR, InvalidValueError, "variance"),
        (MEAN, VAR[:3], YR, ShapeError, "variance"),
        (MEAN, VAR, YR[:3], ShapeError, "y"),
        (MEAN * float("nan"), VAR, YR, InvalidValueError, "mean"),
        (MEAN, VAR, YR * float("nan"), InvalidValueError, "y"),
    ],
)
def test_bad_regression_inputs(fn, mean, var, y, err, name) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(err, match=f"^{name}:"):
        fn((mean, var), y)


def test_bad_levels_methods_and_kinds() -> None:
    pair = (MEAN, VAR)
    with pytest.raises(InvalidValueError, match="^level:"):
        coverage(pair, YR, level=1.0)
    with pytest.raises(InvalidValueError, match="^level:"):
        interval_coverage(pair, YR, levels=(0.5, 0.0))
    with pytest.raises(InvalidValueError, match="^method:"):
        crps(pair, YR, method="quad")  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError, match="^n_samples:"):
        crps(pair, YR, method="sample", n_samples=1)
    with pytest.raises(InvalidValueError, match="^score:"):
        aurc(P, Y, score="variance")
    with pytest.raises(ShapeError, match="^score:"):
        aurc(P, Y, score=torch.zeros(4))
    with pytest.raises(InvalidValueError, match="^coverage:"):
        accuracy_at_coverage(P, Y, 0.0)
    gauss = GaussianPredictive(torch.zeros(1, 1, 2, 1), torch.ones(1, 1, 2, 1))
    with pytest.raises(InvalidValueError, match="^pred:"):
        ece(gauss, torch.zeros(1, 2, dtype=torch.long))
    cat = CategoricalPredictive(probs=P.unsqueeze(0))
    with pytest.raises(InvalidValueError, match="^pred:"):
        crps(cat, torch.zeros(1, 3, 1))
    with pytest.raises(InvalidValueError, match="^predictive:"):
        task_metrics(P, Y)  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError, match="^targets:"):
        TemperatureScaling.fit(torch.randn(3, 2), torch.tensor([0, 1, 2]))
    with pytest.raises(ShapeError, match="^targets:"):
        TemperatureScaling.fit(torch.randn(3, 2), torch.tensor([0, 1]))
