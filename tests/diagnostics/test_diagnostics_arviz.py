"""ArviZ export: groups, named dims, values, az.summary / az.loo / az.plot_ppc, netCDF round trip."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from bayesmeta.diagnostics import (
    load_inference_data,
    loo,
    plot_ppc,
    posterior_summary,
    save_inference_data,
    to_inference_data,
)
from bayesmeta.exceptions import BayesMetaError, InvalidValueError, ShapeError
from bayesmeta.predictive import CategoricalPredictive, GaussianPredictive


def _categorical(m: int = 40, t: int = 3, q: int = 8, c: int = 4, seed: int = 0):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(1, t, q, c, generator=g, dtype=torch.float64)
    pred = CategoricalPredictive(logits=base + 0.3 * torch.randn(m, t, q, c, generator=g, dtype=torch.float64))
    return pred, pred.sample(g), {"w": torch.randn(m, t, 5, generator=g, dtype=torch.float64)}


def _gaussian(m: int = 30, t: int = 2, q: int = 6, dy: int = 2, seed: int = 1):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(1, t, q, dy, generator=g, dtype=torch.float64) + 0.1 * torch.randn(m, t, q, dy, generator=g, dtype=torch.float64)
    pred = GaussianPredictive(mean, torch.full((m, t, q, dy), 0.5, dtype=torch.float64))
    return pred, pred.sample(1, generator=g)[0]


def test_categorical_export_groups_dims_and_values() -> None:
    pred, y, post = _categorical()
    idata = to_inference_data(pred, y, post, n_chains=4)
    assert set(idata.groups()) == {"posterior", "posterior_predictive", "log_likelihood", "observed_data"}
    assert idata.posterior["w"].dims == ("chain", "draw", "task", "w_dim_1")
    assert idata.posterior["w"].shape == (4, 10, 3, 5)
    assert idata.posterior["probs"].dims == ("chain", "draw", "task", "query", "class")
    assert idata.posterior_predictive["y"].dims == ("chain", "draw", "task", "query")
    assert idata.log_likelihood["y"].dims == ("chain", "draw", "task", "query")
    assert idata.observed_data["y"].dims == ("task", "query")
    np.testing.assert_array_equal(idata.posterior.coords["class"].values, np.arange(4))
    # chain-major: chain 1, draw 0 is member 10
    np.testing.assert_allclose(idata.posterior["w"].values[1, 0], post["w"][10].numpy())
    ll = pred.sample_log_probs.gather(-1, y.expand(40, 3, 8).unsqueeze(-1)).squeeze(-1)
    np.testing.assert_allclose(idata.log_likelihood["y"].values.reshape(40, 3, 8), ll.numpy())
    draws = idata.posterior_predictive["y"].values
    assert draws.min() >= 0 and draws.max() < 4
    # draws follow the members' probabilities: empirical frequency of the draws vs mixture probs
    freq = np.stack([(draws.reshape(40, 3, 8) == k).mean(0) for k in range(4)], -1)
    assert np.abs(freq - pred.probs.numpy()).mean() < 0.08
    np.testing.assert_array_equal(idata.observed_data["y"].values, y.numpy())


def test_summary_and_loo_work_and_agree_with_hand_computation() -> None:
    pred, y, post = _categorical(m=400, seed=2)
    idata = to_inference_data(pred, y, post, n_chains=4)
    s = posterior_summary(idata, ["w"])
    assert len(s) == 15 and {"mean", "sd", "r_hat", "ess_bulk"} <= set(s.columns)
    assert s.loc["w[1, 2]", "mean"] == pytest.approx(float(post["w"][:, 1, 2].mean()), abs=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        res = loo(idata, pointwise=True)
    ll = idata.log_likelihood["y"].values.reshape(400, -1)
    # plain importance-sampling LOO, elpd_i = -log mean_m exp(-ll_mi); PSIS smooths only the tail
    is_loo = -(np.logaddexp.reduce(-ll, axis=0) - np.log(400))
    assert res["elpd_loo"] == pytest.approx(is_loo.sum(), rel=1e-2)
    assert res["n_data_points"] == 24


def test_plot_ppc_draws_on_given_axes() -> None:
    from matplotlib.figure import Figure
    pred, y = _gaussian()
    idata = to_inference_data(pred, y)
    ax = Figure().subplots()
    out = plot_ppc(idata, ax=ax, num_pp_samples=10, random_seed=0)
    assert len(ax.lines) > 0  # observed density and posterior-predictive draws
    assert ax in np.ravel(out)  # returns the axes it drew on
    cat_pred, cat_y, _ = _categorical()
    ax2 = Figure().subplots()
    plot_ppc(to_inference_data(cat_pred, cat_y), ax=ax2, num_pp_samples=5, random_seed=0)
    assert len(ax2.lines) + len(ax2.patches) + len(ax2.collections) > 0


def test_gaussian_export_and_mask(tmp_path: Path) -> None:
    pred, y = _gaussian()
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    idata = to_inference_data(pred, y, mask=mask, seed=3)
    assert idata.posterior_predictive["y"].dims == ("chain", "draw", "task", "query", "output")
    assert idata.posterior["pred_var"].dims == ("chain", "draw", "task", "query", "output")
    assert idata.constant_data["query_mask"].dims == ("task", "query")
    ll = idata.log_likelihood["y"].values[0]  # [M, T, Q]
    np.testing.assert_allclose(ll[:, 0], pred.component_log_prob(y)[:, 0].numpy())
    assert (ll[:, 1, 4:] == 0).all()
    # draws: one Gaussian draw per member; the pooled z-scores are standard normal-ish
    z = (idata.posterior_predictive["y"].values[0] - pred.sample_mean.numpy()) / np.sqrt(0.5)
    assert abs(z.mean()) < 0.15 and abs(z.std() - 1) < 0.1
    # same seed, same draws
    again = to_inference_data(pred, y, mask=mask, seed=3)
    np.testing.assert_array_equal(again.posterior_predictive["y"].values, idata.posterior_predictive["y"].values)
    # netCDF round trip
    path = tmp_path / "idata.nc"
    save_inference_data(idata, path)
    back = load_inference_data(path)
    assert set(back.groups()) == set(idata.groups())
    for group in idata.groups():
        for name, var in getattr(idata, group).data_vars.items():
            loaded = getattr(back, group)[name]
            assert loaded.dims == var.dims
            np.testing.assert_array_equal(loaded.values, var.values)


def test_posterior_only_and_explicit_dims() -> None:
    g = torch.Generator().manual_seed(5)
    idata = to_inference_data(
        posterior={"phi": torch.randn(20, 3, 2, generator=g), "tau": torch.rand(20, generator=g)},
        posterior_dims={"phi": ["task", "component"]},
        n_chains=2,
    )
    assert idata.posterior["phi"].dims == ("chain", "draw", "task", "component")
    assert idata.posterior["tau"].dims == ("chain", "draw")
    assert len(posterior_summary(idata)) == 7


def test_bad_inputs(tmp_path: Path) -> None:
    pred, y, post = _categorical()
    with pytest.raises(InvalidValueError, match="^n_chains:"):
        to_inference_data(pred, y, post, n_chains=3)
    with pytest.raises(ShapeError, match="^targets:"):
        to_inference_data(pred, y[:, :2])
    with pytest.raises(InvalidValueError, match="^targets:"):
        to_inference_data(pred, None)
    with pytest.raises(ShapeError, match="^posterior:"):
        to_inference_data(pred, y, {"w": torch.zeros(7, 3)})
    with pytest.raises(InvalidValueError, match="^posterior:"):
        to_inference_data(pred, y, {"probs": torch.zeros(40, 3)})
    with pytest.raises(ShapeError, match="^mask:"):
        to_inference_data(pred, y, mask=torch.ones(3, 8))
    with pytest.raises(BayesMetaError, match="^predictive:"):
        to_inference_data()
    with pytest.raises(InvalidValueError, match="^path:"):
        load_inference_data(tmp_path / "missing.nc")
