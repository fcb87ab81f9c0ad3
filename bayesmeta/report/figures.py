"""Report figures, drawn on bare :class:`matplotlib.figure.Figure` objects (no pyplot, no backend
switching, no global state) and returned as PNG bytes.

Every figure labels its axes; reliability diagrams draw the diagonal and print each bin's count;
PIT histograms draw the uniform density; risk–coverage curves show each method's
random-referral level.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from bayesmeta.exceptions import ShapeError
from bayesmeta.metrics.classification import ReliabilityDiagram
from bayesmeta.metrics.selective import RiskCoverage
from bayesmeta.metrics.task_metrics import METRIC_INFO
from bayesmeta.predictive import GaussianPredictive

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "new_figure",
    "to_png",
    "reliability_figure",
    "pit_figure",
    "coverage_figure",
    "risk_coverage_figure",
    "per_task_figure",
    "plot_regression_task",
]

_DPI = 100
_MAX_CURVE_POINTS = 800


def _wrap(label: str, width: int = 38) -> str:
    """Wrap a long run label so a panel title stays within its panel."""
    return "\n".join(textwrap.wrap(label, width)) or label


def to_png(fig: Figure) -> bytes:
    """Render ``fig`` to PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight")
    return buf.getvalue()


def _grid(n: int, width: float = 4.2, height: float = 3.8, max_cols: int = 3) -> tuple[Figure, list]:
    cols = min(n, max_cols)
    rows = math.ceil(n / cols)
    fig = new_figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def reliability_figure(diagrams: Sequence[tuple[str, ReliabilityDiagram]], max_cols: int = 3) -> Figure:
    """One top-label reliability diagram per method (``max_cols`` per row; 2 puts raw/calibrated pairs in rows).

    Bars: accuracy per confidence bin; red hatched: the gap to the bin's mean confidence; dashed:
    the diagonal of perfect calibration; the numbers along the top are the bins' point counts.
    """
    fig, axes = _grid(len(diagrams), max_cols=max_cols)
    for ax, (label, d) in zip(axes, diagrams, strict=True):
        lo, hi = d.bin_lower.numpy(), d.bin_upper.numpy()
        acc, conf, count = d.accuracy.numpy(), d.confidence.numpy(), d.count.numpy()
        nonempty = count > 0
        left = np.where(np.isfinite(lo), lo, 0.0)
        width = np.where(np.isfinite(hi - lo), np.maximum(hi - lo, 0.004), 0.0)
        ax.bar(left[nonempty], acc[nonempty], width=width[nonempty], align="edge", color="C0",
               edgecolor="white", linewidth=0.6, label="accuracy")
        gap_lo = np.minimum(acc, conf)[nonempty]
        ax.bar(left[nonempty], np.abs(conf - acc)[nonempty], bottom=gap_lo, width=width[nonempty], align="edge",
               color="C3", alpha=0.35, hatch="//", edgecolor="C3", linewidth=0.0, label="gap to confidence")
        ax.plot([0, 1], [0, 1], linestyle="--", color="0.3", linewidth=1.0, label="perfect calibration")
        for x0, w, c in zip(left[nonempty], width[nonempty], count[nonempty], strict=True):
            ax.text(x0 + w / 2, 1.02, str(int(c)), ha="center", va="bottom", fontsize=7, rotation=90)
        ax.axhline(1.0, color="0.85", linewidth=0.6)
        ax.text(0.0, 1.02, "points per bin:", ha="left", va="bottom", fontsize=7, color="0.35")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.16)
        ax.set_yticks(np.linspace(0, 1, 6))
        ax.set_xlabel("confidence (top-label probability)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{_wrap(label)}\npooled ECE {d.ece:.3f}, MCE {d.mce:.3f}, n = {int(count.sum())}", fontsize=10)
        ax.legend(loc="upper left", bbox_to_anchor=(0.0, 0.85), fontsize=7, frameon=False)
    return fig


def pit_figure(histograms: Sequence[tuple[str, np.ndarray]], max_cols: int = 3) -> Figure:
    """PIT histograms (density) per method, with the Uniform(0, 1) density a calibrated model gives."""
    fig, axes = _grid(len(histograms), max_cols=max_cols)
    for ax, (label, counts) in zip(axes, histograms, strict=True):
        k = counts.shape[0]
        n = int(counts.sum())
        density = counts / max(n, 1) * k
        edges = np.linspace(0, 1, k + 1)
        ax.bar(edges[:-1], density, width=1 / k, align="edge", color="C2", edgecolor="white", linewidth=0.6)
        ax.axhline(1.0, linestyle="--", color="0.3", linewidth=1.0, label="uniform (calibrated)")
        for x0, c, h in zip(edges[:-1], counts, density, strict=True):
            ax.text(x0 + 0.5 / k, h + 0.02, str(int(c)), ha="center", va="bottom", fontsize=7, rotation=90)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, max(1.5, float(density.max()) * 1.2))
        ax.set_xlabel("PIT value F(y)")
        ax.set_ylabel("density")
        # short title: the reading guide (U-shape overconfident, hump underconfident) is in the
        # caption; a long subtitle ran into the neighbouring panel's
        ax.set_title(f"{_wrap(label)}\npooled over n = {n} points", fontsize=10)
        ax.legend(loc="upper right", fontsize=7, frameon=False)
    return fig


def coverage_figure(curves: Sequence[tuple[str, np.ndarray, np.ndarray]]) -> Figure:
    """Empirical vs nominal central-interval coverage, one line per method, with the diagonal."""
    fig = new_figure(figsize=(4.8, 4.4), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.3", linewidth=1.0, label="nominal")
    for i, (label, levels, cov) in enumerate(curves):
        ax.plot(levels, cov, marker="o", markersize=3, color=f"C{i % 10}", label=label)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("nominal coverage of the central interval")
    ax.set_ylabel("empirical coverage")
    ax.set_title("Interval coverage (above the diagonal: underconfident)", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    return fig


def risk_coverage_figure(curves: Sequence[tuple[str, RiskCoverage]], risk_label: str) -> Figure:
    """Risk–coverage curves of all methods on one axes; dotted: each method's random-referral level."""
    fig = new_figure(figsize=(6.0, 4.4), layout="constrained")
    ax = fig.subplots()
    for i, (label, rc) in enumerate(curves):
        cov, risk = rc.coverage.numpy(), rc.risk.numpy()
        if cov.size > _MAX_CURVE_POINTS:
            idx = np.unique(np.linspace(0, cov.size - 1, _MAX_CURVE_POINTS).round().astype(int))
            cov, risk = cov[idx], risk[idx]
        color = f"C{i % 10}"
        ax.plot(cov, risk, color=color, linewidth=1.5, label=f"{label} (AURC {rc.aurc:.3g})")
        ax.axhline(rc.overall_risk, color=color, linestyle=":", linewidth=1.0)
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("coverage (fraction of cases kept; the rest are referred)")
    ax.set_ylabel(risk_label)
    ax.set_title("Risk–coverage: refer the most uncertain cases (ranked by predictive entropy)", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    return fig


def per_task_figure(metric_values: dict[str, Sequence[tuple[str, np.ndarray]]]) -> Figure:
    """Distribution over tasks of each metric: a box plot per method with the tasks as points.

    Args:
        metric_values: metric name -> ``[(method label, per-task values [T]), ...]``.
    """
    names = list(metric_values)
    fig, axes = _grid(len(names), width=max(3.6, 1.1 * max(len(v) for v in metric_values.values()) + 1.6), height=3.6)
    rng = np.random.default_rng(0)  # jitter only; fixed so reports are reproducible
    for ax, name in zip(axes, names, strict=True):
        series = [(label, v[np.isfinite(v)]) for label, v in metric_values[name]]
        data = [v for _, v in series]
        positions = np.arange(1, len(series) + 1)
        ax.boxplot(data, positions=positions, widths=0.5, showfliers=False)
        for p, (_, v) in zip(positions, series, strict=True):
            ax.scatter(p + rng.uniform(-0.15, 0.15, v.size), v, s=14, alpha=0.6, color="C0", linewidths=0)
        info = METRIC_INFO.get(name)
        if info is not None and info.better == "nominal" and info.target is not None:
            ax.axhline(info.target, linestyle="--", color="0.3", linewidth=1.0, label=f"nominal {info.target:g}")
            ax.legend(fontsize=7, frameon=False)
        ax.set_xticks(positions, [label for label, _ in series], rotation=20, ha="right", fontsize=8)
        ax.set_xlabel("method")
        ax.set_ylabel(f"{name} per task")
        ax.set_title(info.description if info else name, fontsize=9)
    return fig


def plot_regression_task(
    ax: Axes,
    x: torch.Tensor,
    predictive: GaussianPredictive,
    *,
    task: int = 0,
    level: float = 0.9,
    truth: torch.Tensor | None = None,
    support: tuple[torch.Tensor, torch.Tensor] | None = None,
    label: str = "predictive mean",
) -> None:
    """Draw one 1-d regression task: the predictive mean, its central ``level`` band, and
    optionally the true function and the support points.

    Args:
        ax: matplotlib axes to draw on.
        x: ``[T, N, 1]`` inputs at which ``predictive`` was computed (e.g. a sorted grid).
        predictive: ``[M, T, N, 1]`` Gaussian predictive at ``x``.
        task: which of the T tasks to draw.
        level: central probability of the band (``predictive.interval(level)``).
        truth: optional ``[T, N, 1]`` true function values at ``x`` (dashed).
        support: optional ``(support_x, support_y)``, each ``[T, S, 1]`` (red points).
        label: legend label of the mean.
    """
    if x.dim() != 3 or x.shape[-1] != 1 or tuple(predictive.mean.shape) != tuple(x.shape):
        raise ShapeError(f"x: expected [T, N, 1] matching the predictive's mean {list(predictive.mean.shape)}, got {list(x.shape)}")
    lo, hi = predictive.interval(level)
    grid = x[task, :, 0].detach().cpu()
    if truth is not None:
        ax.plot(grid, truth[task, :, 0].detach().cpu(), "k--", lw=1, label="true function")
    ax.plot(grid, predictive.mean[task, :, 0].detach().cpu(), label=label)
    ax.fill_between(grid, lo[task, :, 0].detach().cpu(), hi[task, :, 0].detach().cpu(), alpha=0.3,
                    label=f"{100 * level:g}% interval")
    if support is not None:
        sx, sy = support
        ax.scatter(sx[task, :, 0].detach().cpu(), sy[task, :, 0].detach().cpu(), c="r", s=14, zorder=3,
                   label=f"{sx.shape[1]} support points")
    ax.set(xlabel="x", ylabel="y")


def new_figure(**kwargs: Any) -> Figure:
    """A bare ``matplotlib.figure.Figure(**kwargs)``; matplotlib is imported on first use, so that
    importing bayesmeta (or this module) does not load it."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)
