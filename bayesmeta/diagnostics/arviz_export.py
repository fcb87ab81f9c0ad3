"""ArviZ bridge: posterior samples, posterior-predictive draws and observed data as InferenceData.

Every ArviZ call of bayesmeta lives in this subpackage (ArviZ 0.23.x on Python 3.11; 1.x changes
the API), and ArviZ is imported only when one of these functions runs, so ``import bayesmeta``
stays light.

Layout of :func:`to_inference_data`'s result, for M = ``n_chains * n_draws`` members (samples or
particles, chain-major) of a predictive over T tasks and Q query points:

=====================  =========================  ================================================
group                  variable                   dims (after ``chain, draw``)
=====================  =========================  ================================================
posterior              each given sample tensor   ``task, <name>_dim_0, ...`` (``tasks_first``)
posterior              ``probs`` (categorical)    ``task, query, class`` — per-member probabilities
posterior              ``pred_mean``/``pred_var`` ``task, query, output`` — per-member Gaussian
posterior_predictive   ``y``                      ``task, query`` (+ ``output``): one draw per member
log_likelihood         ``y``                      ``task, query``: ``log p(y_tq | member)``
observed_data          ``y``                      ``task, query`` (+ ``output``)
constant_data          ``query_mask``             ``task, query`` (only with a mask)
=====================  =========================  ================================================

``az.summary`` (posterior), ``az.plot_ppc`` (posterior_predictive vs observed_data) and
``az.loo`` (log_likelihood, pointwise over every ``task, query`` pair) work on it directly.
Masked-out query points have a log-likelihood of exactly 0, so they add nothing to the ELPD
(they still count in LOO's number of observations).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from bayesmeta._validation import check_positive_int, describe
from bayesmeta.exceptions import InvalidValueError, ShapeError
from bayesmeta.predictive import CategoricalPredictive, GaussianPredictive

if TYPE_CHECKING:  # pragma: no cover
    import arviz
    import pandas
    from matplotlib.axes import Axes

__all__ = [
    "to_inference_data",
    "save_inference_data",
    "load_inference_data",
    "posterior_summary",
    "loo",
    "plot_ppc",
]


def _az() -> Any:
    """Import ArviZ, silencing its import-time notice about the coming 1.x refactor."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")
        import arviz

    return arviz


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _split_chains(x: np.ndarray, n_chains: int) -> np.ndarray:
    """``[M, ...]`` -> ``[n_chains, M // n_chains, ...]`` (chain-major)."""
    return x.reshape(n_chains, x.shape[0] // n_chains, *x.shape[1:])


def _predictive_groups(
    pred: CategoricalPredictive | GaussianPredictive,
    targets: torch.Tensor,
    mask: torch.Tensor | None,
    var_name: str,
    generator: torch.Generator,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, list[str]]]:
    """Per-member (posterior quantities, posterior-predictive draws, log-likelihoods) and dims."""
    if isinstance(pred, CategoricalPredictive):
        lp = pred.sample_log_probs  # [M, T, Q, C]
        want = tuple(pred.batch_shape)
        if tuple(targets.shape) != want or targets.is_floating_point():
            raise ShapeError(f"targets: expected int class indices of shape {list(want)}, got {describe(targets)}")
        c = pred.n_classes
        if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= c):
            raise InvalidValueError(f"targets: expected class indices in [0, {c}), got [{int(targets.min())}, {int(targets.max())}]")
        m = lp.shape[0]
        draws = torch.multinomial(lp.exp().reshape(-1, c), 1, generator=generator).reshape(m, *want)
        loglik = lp.gather(-1, targets.long().expand(m, *want).unsqueeze(-1)).squeeze(-1)
        post = {"probs": lp.exp()}
        dims = {"probs": ["task", "query", "class"], var_name: ["task", "query"]}
    elif isinstance(pred, GaussianPredictive):
        want = (*pred.batch_shape, pred.event_dim)
        if tuple(targets.shape) != want or not targets.is_floating_point():
            raise ShapeError(f"targets: expected float targets of shape {list(want)}, got {describe(targets)}")
        mu, var = pred.sample_mean, pred.sample_variance
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        draws = mu + var.sqrt() * eps
        loglik = pred.component_log_prob(targets)  # [M, T, Q]
        post = {"pred_mean": mu, "pred_var": var}
        dims = {"pred_mean": ["task", "query", "output"], "pred_var": ["task", "query", "output"]}
        dims[var_name] = ["task", "query", "output"]
    else:
        raise InvalidValueError(
            f"predictive: expected a CategoricalPredictive or GaussianPredictive, got {type(pred).__name__}"
        )
    if mask is not None:
        loglik = torch.where(mask, loglik, torch.zeros_like(loglik))
    return post, {var_name: draws}, {var_name: loglik}, dims


def to_inference_data(
    predictive: CategoricalPredictive | GaussianPredictive | None = None,
    targets: torch.Tensor | None = None,
    posterior: Mapping[str, torch.Tensor] | None = None,
    *,
    mask: torch.Tensor | None = None,
    n_chains: int = 1,
    tasks_first: bool = True,
    posterior_dims: Mapping[str, Sequence[str]] | None = None,
    var_name: str = "y",
    seed: int = 0,
) -> arviz.InferenceData:
    """Export posterior samples/particles and a predictive with its observed targets to ArviZ.

    Args:
        predictive: ``[M, T, Q, ...]`` categorical or Gaussian predictive whose M members are the
            posterior samples or particles (optional if ``posterior`` is given).
        targets: observed ``[T, Q]`` class indices or ``[T, Q, Dy]`` values; required with
            ``predictive``.
        posterior: name -> ``[M, ...]`` tensor of parameter samples (same M as the predictive).
        mask: optional bool ``[T, Q]`` query mask (True = present).
        n_chains: split M into this many chains (chain-major), for R-hat across chains.
        tasks_first: name the first dim after M of every posterior tensor ``task`` (the
            library's convention: per-task parameters ``[M, T, ...]``); False names it
            ``<name>_dim_0`` like ArviZ.
        posterior_dims: explicit dim names per posterior variable (overrides ``tasks_first``).
        var_name: name of the observed variable.
        seed: seed of the posterior-predictive draws (a local generator; global RNG untouched).

    Returns:
        An ``arviz.InferenceData`` (see the module docstring for its groups and dims).
    """
    check_positive_int("n_chains", n_chains)
    if predictive is None and not posterior:
        raise InvalidValueError("predictive: pass a predictive, posterior samples, or both; got neither")
    post: dict[str, torch.Tensor] = {}
    dims: dict[str, list[str]] = {}
    for name, value in (posterior or {}).items():
        if not isinstance(value, torch.Tensor) or value.dim() < 1:
            raise ShapeError(f"posterior[{name!r}]: expected a [M, ...] tensor, got {type(value).__name__}")
        post[name] = value
        rest = [f"{name}_dim_{i}" for i in range(value.dim() - 1)]
        if posterior_dims is not None and name in posterior_dims:
            rest = list(posterior_dims[name])
        elif tasks_first and rest:
            rest[0] = "task"
        if len(rest) != value.dim() - 1:
            raise ShapeError(f"posterior_dims[{name!r}]: expected {value.dim() - 1} names, got {len(rest)}")
        dims[name] = rest
    groups: dict[str, Any] = {}
    coords: dict[str, Any] = {}
    if predictive is not None:
        if targets is None:
            raise InvalidValueError("targets: expected the observed targets with a predictive, got None")
        if mask is not None and (mask.dtype != torch.bool or tuple(mask.shape) != tuple(predictive.batch_shape)):
            raise ShapeError(f"mask: expected a bool tensor of shape {list(predictive.batch_shape)}, got {describe(mask)}")
        gen = torch.Generator().manual_seed(seed)
        p_post, pp, ll, p_dims = _predictive_groups(predictive, targets, mask, var_name, gen)
        clash = set(p_post) & set(post)
        if clash:
            raise InvalidValueError(f"posterior: names {sorted(clash)} are reserved for the predictive's quantities")
        post.update(p_post)
        dims.update(p_dims)
        groups["posterior_predictive"] = pp
        groups["log_likelihood"] = ll
        groups["observed_data"] = {var_name: targets}
        if mask is not None:
            groups["constant_data"] = {"query_mask": mask}
            dims["query_mask"] = ["task", "query"]
        t, q = predictive.batch_shape
        coords = {"task": np.arange(t), "query": np.arange(q)}
        if isinstance(predictive, CategoricalPredictive):
            coords["class"] = np.arange(predictive.n_classes)
        else:
            coords["output"] = np.arange(predictive.event_dim)
    n_members = {int(v.shape[0]) for v in post.values()} | {int(v.shape[0]) for v in groups.get("posterior_predictive", {}).values()}
    if len(n_members) != 1:
        raise ShapeError(f"posterior: expected the same number of samples M everywhere, got {sorted(n_members)}")
    (m,) = n_members
    if m % n_chains:
        raise InvalidValueError(f"n_chains: expected a divisor of the {m} samples, got {n_chains}")

    def chains(d: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
        return {k: _split_chains(_np(v), n_chains) for k, v in d.items()}

    az = _az()
    return az.from_dict(
        posterior=chains(post),
        posterior_predictive=chains(groups["posterior_predictive"]) if "posterior_predictive" in groups else None,
        log_likelihood=chains(groups["log_likelihood"]) if "log_likelihood" in groups else None,
        observed_data={k: _np(v) for k, v in groups["observed_data"].items()} if "observed_data" in groups else None,
        constant_data={k: _np(v) for k, v in groups["constant_data"].items()} if "constant_data" in groups else None,
        coords=coords or None,
        dims=dims,
        attrs={"created_by": "bayesmeta"},
    )


def save_inference_data(idata: arviz.InferenceData, path: str | PathLike[str]) -> str:
    """Write ``idata`` to a netCDF file (h5netcdf engine); returns the path written."""
    return idata.to_netcdf(str(path))


def load_inference_data(path: str | PathLike[str]) -> arviz.InferenceData:
    """Read an InferenceData netCDF file written by :func:`save_inference_data`."""
    if not Path(path).is_file():
        raise InvalidValueError(f"path: expected an existing netCDF file, got {str(path)!r}")
    return _az().from_netcdf(str(path))


def posterior_summary(idata: arviz.InferenceData, var_names: Sequence[str] | None = None, **kwargs: Any) -> pandas.DataFrame:
    """``az.summary``: means, HDIs, ESS and R-hat of posterior variables."""
    return _az().summary(idata, var_names=list(var_names) if var_names else None, **kwargs)


def loo(idata: arviz.InferenceData, pointwise: bool = False) -> Any:
    """``az.loo``: PSIS leave-one-out ELPD over every (task, query) observation."""
    return _az().loo(idata, pointwise=pointwise)


def plot_ppc(idata: arviz.InferenceData, ax: Axes | None = None, **kwargs: Any) -> Any:
    """``az.plot_ppc`` (matplotlib backend): posterior-predictive draws against the observed data."""
    return _az().plot_ppc(idata, ax=ax, **kwargs)
