"""A suite's report and figures: the HTML report, reliability diagrams, predictive bands, prior samples.

``report/report.html`` is :func:`bayesmeta.report.build_report` over every finished method of the
suite (tables with CIs, paired comparisons, reliability diagrams or PIT histograms per method).
Next to it, PNG files a paper or a reviewer expects:

- ``reliability.png`` (classification): one pooled reliability diagram per method;
- ``posterior_bands.png`` (one-dimensional regression): every regression learner's posterior
  predictive on the *same* test task (the widest of the first 10), mean and central 95% band, with the task's support points
  and its query points (the classic sinusoid figure);
- ``prior_samples.png``: functions drawn from each learned prior that can be sampled before any
  data is seen (BMAML's and PLATIPUS's Gaussian priors over weights, DKT's GP prior under the
  learned deep kernel), and the meta-learned initial function of the point-estimate learners.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from bayesmeta.benchmark.suites import Suite
from bayesmeta.io import atomic_write_text

__all__ = ["write_suite_report", "posterior_bands_figure", "prior_samples_figure"]

_N_GRID = 200
_N_PRIOR = 8


def _reliability_png(dirs: Sequence[Path], out: Path) -> None:
    from bayesmeta.metrics.classification import reliability_diagram
    from bayesmeta.report import load_runs
    from bayesmeta.report.figures import reliability_figure, to_png

    runs = [r for r in load_runs(list(dirs)) if r.predictive is not None]
    if runs:
        diagrams = [
            (r.label, reliability_diagram(r.predictive, r.targets, 15, mask=r.query_mask))
            for r in runs
        ]
        (out / "reliability.png").write_bytes(to_png(reliability_figure(diagrams)))


def _load(train_dirs: dict[str, Path]) -> dict[str, Any]:
    from bayesmeta.runs import load_learner

    out = {}
    for label, d in train_dirs.items():
        learner, _ = load_learner(d, "best")
        out[label] = learner.eval()
    return out


def posterior_bands_figure(
    learners: dict[str, Any], task: Any, x_grid: torch.Tensor, title: str
) -> Any:
    """Each learner's predictive on one task: mean, central 95% band, support and query points.

    Args:
        learners: label -> a trained regression learner (one-dimensional inputs and outputs).
        task: a one-task :class:`~bayesmeta.tasks.TaskBatch` (``T = 1``).
        x_grid: ``[G]`` inputs to draw the predictive on.
        title: the figure title.

    Returns:
        A matplotlib figure.
    """
    from matplotlib.figure import Figure

    n = len(learners)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(3.6 * cols, 2.8 * rows))
    xs, ys = task.support_x[0, :, 0], task.support_y[0, :, 0]
    xq, yq = task.query_x[0, :, 0], task.query_y[0, :, 0]
    order = torch.argsort(xq)
    grid = x_grid.reshape(1, -1, 1).to(task.support_x.dtype)
    for i, (label, learner) in enumerate(learners.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        torch.manual_seed(0)
        with torch.no_grad():
            pred = learner.predict(learner.adapt(task.support), grid)
        mean = pred.mean[0, :, 0]
        sd = pred.variance[0, :, 0].clamp_min(0).sqrt()
        g = x_grid.numpy()
        ax.plot(
            xq[order].numpy(), yq[order].numpy(), color="0.6", lw=1, label="task (query points)"
        )
        ax.fill_between(
            g,
            (mean - 1.96 * sd).numpy(),
            (mean + 1.96 * sd).numpy(),
            alpha=0.3,
            color="C0",
            label="95% band",
        )
        ax.plot(g, mean.numpy(), color="C0", lw=1.5, label="predictive mean")
        ax.scatter(xs.numpy(), ys.numpy(), color="k", s=18, zorder=3, label="support")
        ax.set_title(label, fontsize=9)
        lo, hi = float(yq.min()), float(yq.max())
        pad = 0.5 * (hi - lo) + 0.5
        ax.set_ylim(lo - pad, hi + pad)
        if i == 0:
            ax.legend(fontsize=6, loc="upper left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _prior_draws(learner: Any, x: torch.Tensor, n: int) -> tuple[torch.Tensor, str] | None:
    """``[n, G]`` functions from the learner's prior (or its initial function, n = 1), with a note."""
    from bayesmeta.gaussian import CholeskyJitterWarning, robust_cholesky
    from bayesmeta.inference.dkt import DKT
    from bayesmeta.priors import DiagonalGaussianPrior

    g = torch.Generator().manual_seed(0)
    xx = x.reshape(-1, 1).to(next(learner.parameters()).dtype)
    with torch.no_grad():
        prior = getattr(learner, "prior", None)
        if isinstance(prior, DiagonalGaussianPrior):
            return prior.sample_functions(xx, n, g)[
                ..., 0
            ], "draws from the learned Gaussian prior over weights"
        if isinstance(learner, DKT) and learner.task_kind != "classification":
            z = learner.deep_kernel.features(xx.unsqueeze(0), "x")  # [1, G, F]
            k = learner.deep_kernel.covariance(z, z)[0].double()
            m = learner.mean_module(z)[0].double()
            # a smooth kernel on 200 close grid points is numerically singular: escalate jitter
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CholeskyJitterWarning)
                chol, _ = robust_cholesky(k, max_jitter=1e-1, name="DKT prior covariance on the grid")
            eps = torch.randn(k.shape[0], n, generator=g, dtype=k.dtype)
            return (
                m.unsqueeze(-1) + chol @ eps
            ).T.float(), "draws from the GP prior under the learned deep kernel"
        model = getattr(learner, "model", None)
        if isinstance(model, torch.nn.Module) and getattr(model, "out_features", None) == 1:
            return model(xx)[..., 0].unsqueeze(
                0
            ), "the meta-learned initial function (a point estimate)"
    return None


def prior_samples_figure(learners: dict[str, Any], x_grid: torch.Tensor, title: str) -> Any | None:
    """Functions from each learner's prior (see the module docstring); None if no learner has one."""
    from matplotlib.figure import Figure

    draws = {}
    for label, learner in learners.items():
        d = _prior_draws(learner, x_grid, _N_PRIOR)
        if d is not None:
            draws[label] = d
    if not draws:
        return None
    n = len(draws)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(3.6 * cols, 2.8 * rows))
    for i, (label, (f, note)) in enumerate(draws.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        for row in f:
            ax.plot(x_grid.numpy(), row.numpy(), lw=1, alpha=0.8)
        ax.set_title(f"{label}\n{note}", fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _regression_figures(
    suite: Suite, labels: list[str], configs: dict[str, dict[str, Any]], root: Path, out: Path
) -> None:
    from bayesmeta.benchmark.run import episode_source
    from bayesmeta.report.figures import to_png
    from bayesmeta.tasks import fixed_episodes

    trained = [lbl for lbl in labels if lbl in configs]
    if not trained:
        return
    cfg = configs[trained[0]]
    source = episode_source(suite, cfg)
    # the widest of the first 10 test tasks: a near-flat task would show little of the predictive
    tasks = fixed_episodes(source, min(10, suite.n_episodes), seed=suite.seed, tasks_per_batch=1)
    index = max(range(len(tasks)), key=lambda i: float(tasks[i].query_y.max() - tasks[i].query_y.min()))
    task = tasks[index]
    if task.support_x.shape[-1] != 1 or task.support_y.shape[-1] != 1:
        return
    base = root / (suite.train_suite or suite.name)
    learners = _load({lbl: base / lbl for lbl in trained})
    lo = float(min(task.support_x.min(), task.query_x.min()))
    hi = float(max(task.support_x.max(), task.query_x.max()))
    grid = torch.linspace(lo, hi, _N_GRID)
    fig = posterior_bands_figure(
        learners, task, grid, f"{suite.name}: posterior predictive on test task {index}"
    )
    (out / "posterior_bands.png").write_bytes(to_png(fig))
    prior = prior_samples_figure(learners, grid, f"{suite.name}: functions before seeing any data")
    if prior is not None:
        (out / "prior_samples.png").write_bytes(to_png(prior))


def write_suite_report(
    suite: Suite,
    method_dirs: Sequence[Path],
    out: Path,
    configs: dict[str, dict[str, Any]],
    root: Path,
) -> Path:
    """Write ``out/report.html`` and the PNG figures of one suite; returns the HTML path."""
    from bayesmeta.report import build_report

    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the report's notes on small groups
        html = build_report(list(method_dirs), out)
    if suite.kind == "classification":
        _reliability_png(method_dirs, out)
    else:
        _regression_figures(suite, [d.name for d in method_dirs], configs, root, out)
    atomic_write_text(
        "\n".join(
            sorted(p.name for p in out.iterdir() if p.suffix in (".html", ".png", ".md", ".json"))
        )
        + "\n",
        out / "INDEX.txt",
    )
    return Path(html)
