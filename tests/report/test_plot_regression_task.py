"""``plot_regression_task`` draws what it is given: the mean, the band of ``predictive.interval``,
the true function and the support points of the chosen task; a mismatched ``x`` is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from bayesmeta.exceptions import ShapeError
from bayesmeta.predictive import GaussianPredictive
from bayesmeta.report.figures import plot_regression_task


def test_draws_mean_band_truth_and_support_of_one_task() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.linspace(-1, 1, 7).reshape(1, 7, 1).repeat(2, 1, 1)        # [T=2, N=7, 1]
    pred = GaussianPredictive(torch.randn(3, 2, 7, 1, generator=g), torch.rand(3, 2, 7, 1, generator=g) + 0.1)
    truth = torch.randn(2, 7, 1, generator=g)
    support = (torch.randn(2, 4, 1, generator=g), torch.randn(2, 4, 1, generator=g))
    ax = Figure().add_subplot()
    plot_regression_task(ax, x, pred, task=1, level=0.8, truth=truth, support=support)
    truth_line, mean_line = ax.get_lines()
    np.testing.assert_allclose(truth_line.get_ydata(), truth[1, :, 0].numpy())
    np.testing.assert_allclose(mean_line.get_ydata(), pred.mean[1, :, 0].numpy(), rtol=1e-6)
    lo, hi = pred.interval(0.8)
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    # fill_between's polygon runs along the lower edge and back along the upper edge
    assert np.isclose(band.min(), float(lo[1].min()), rtol=1e-5) and np.isclose(band.max(), float(hi[1].max()), rtol=1e-5)
    np.testing.assert_allclose(ax.collections[1].get_offsets(), torch.cat([support[0][1], support[1][1]], -1).numpy())
    assert ax.collections[0].get_label() == "80% interval"


def test_mismatched_inputs_name_x() -> None:
    pred = GaussianPredictive(torch.zeros(1, 1, 5, 1), torch.ones(1, 1, 5, 1))
    with pytest.raises(ShapeError, match="x: expected"):
        plot_regression_task(Figure().add_subplot(), torch.zeros(1, 4, 1), pred)
