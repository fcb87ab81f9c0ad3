"""Report blocks for runs evaluated with a calibrator (``bayesmeta evaluate --calibrate``).

- scaling calibrators: reliability diagrams (classification) or PIT histograms (regression) of
  every run before and after, side by side;
- split conformal: mean coverage (with its 95% CI over tasks, against the nominal ``1 - alpha``)
  and mean set size or interval width per method, plus their per-task distributions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from bayesmeta.metrics.classification import reliability_diagram
from bayesmeta.metrics.regression import pit_histogram
from bayesmeta.report.figures import (
    new_figure,
    per_task_figure,
    pit_figure,
    reliability_figure,
    to_png,
)
from bayesmeta.report.html import FigureBlock
from bayesmeta.report.loading import RunResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["calibration_figures", "calibration_payload", "conformal_figure"]


def _label(r: RunResult) -> str:
    info = (r.calibrated or {}).get("calibrator", {})
    if info.get("name") == "temperature_scaling":
        return f"{r.label} + temperature (τ = {info['temperature']:.3g})"
    if info.get("name") == "variance_scaling":
        return f"{r.label} + variance scaling (s = {info['scale']:.3g})"
    return f"{r.label} + {info.get('name', 'calibrated')}"


def _scaled_block(runs: list[RunResult], kind: str) -> FigureBlock | None:
    have = [r for r in runs if r.calibrated_predictive is not None and r.predictive is not None]
    if not have:
        return None
    if kind == "classification":
        pairs = []
        for r in have:
            pairs.append((f"{r.label} (raw)", reliability_diagram(r.predictive, r.targets, 15, mask=r.query_mask)))
            pairs.append((_label(r), reliability_diagram(r.calibrated_predictive, r.targets, 15, mask=r.query_mask)))
        return FigureBlock(
            "Reliability diagrams: raw vs calibrated",
            "Each run (one row) before (left) and after (right) the scaling calibrator fitted on its validation episodes; "
            "same binning as above. Temperature scaling keeps every prediction and changes only confidence.",
            to_png(reliability_figure(pairs, max_cols=2)),
        )
    hists = []
    for r in have:
        hists.append((f"{r.label} (raw)", pit_histogram(r.predictive, r.targets, 10, r.query_mask).numpy()))
        hists.append((_label(r), pit_histogram(r.calibrated_predictive, r.targets, 10, r.query_mask).numpy()))
    return FigureBlock(
        "PIT histograms: raw vs calibrated",
        "Each run before and after variance scaling (the predictive widened or narrowed about its mean by one "
        "factor fitted on validation episodes).",
        to_png(pit_figure(hists, max_cols=2)),
    )


def conformal_figure(rows: list[tuple[str, dict[str, Any], float]], size_key: str) -> Figure:
    """Mean coverage and mean set size (or interval width) per method with 95% CIs over tasks.

    Args:
        rows: ``(label, calibrated metrics summary, alpha)`` per run.
        size_key: ``"conformal_set_size"`` or ``"conformal_width"``.
    """
    fig = new_figure(figsize=(4.0 + 1.6 * len(rows), 4.0), layout="constrained")
    ax_cov, ax_size = fig.subplots(1, 2)
    x = np.arange(len(rows))
    for ax, key, ylabel in (
        (ax_cov, "conformal_coverage", "coverage (fraction of labels in the set)"),
        (ax_size, size_key, "mean set size (classes)" if size_key == "conformal_set_size" else "mean interval width"),
    ):
        mean = np.array([m[key]["mean"] for _, m, _ in rows])
        low = np.array([m[key]["low"] for _, m, _ in rows])
        high = np.array([m[key]["high"] for _, m, _ in rows])
        ax.errorbar(x, mean, yerr=[mean - low, high - mean], fmt="o", capsize=4, color="C0")
        ax.set_xticks(x, [label for label, _, _ in rows], rotation=20, ha="right", fontsize=8)
        ax.set_ylabel(ylabel)
        ax.set_xlim(-0.6, len(rows) - 0.4)
    for i, (_, _, alpha) in enumerate(rows):
        ax_cov.hlines(1 - alpha, i - 0.4, i + 0.4, linestyles="--", color="0.3", linewidth=1.0)
    ax_cov.set_title("Coverage vs nominal 1 − α (dashed)", fontsize=10)
    ax_size.set_title("Size (smaller is better at equal coverage)", fontsize=10)
    return fig


def _conformal_blocks(runs: list[RunResult], kind: str) -> list[FigureBlock]:
    have = [
        r for r in runs
        if r.calibrated is not None and r.calibrated["calibrator"].get("name") == "split_conformal"
        and "conformal_coverage" in r.calibrated["metrics"]
    ]
    if not have:
        return []
    size_key = "conformal_set_size" if kind == "classification" else "conformal_width"
    rows = [(r.label, r.calibrated["metrics"], float(r.calibrated["calibrator"]["alpha"])) for r in have]  # type: ignore[index]
    blocks = [FigureBlock(
        "Conformal prediction: coverage and size",
        "Split conformal calibrated on each run's validation tasks (all their query points pooled). Points: mean "
        "over test tasks; bars: 95% bootstrap CI over tasks. The guarantee is marginal over tasks (coverage >= 1 − α "
        "on average), not per task.",
        to_png(conformal_figure(rows, size_key)),
    )]
    names = ("conformal_coverage", size_key) + (("conformal_empty_rate",) if kind == "classification" else ())
    values = {
        n: [(r.label, r.calibrated_per_task[n]) for r in have if n in r.calibrated_per_task]
        for n in names
    }
    values = {k: v for k, v in values.items() if v}
    if values:
        blocks.append(FigureBlock(
            "Conformal prediction: per-task distributions",
            "Each point is one test task: coverage varies between tasks even when the marginal coverage is on target.",
            to_png(per_task_figure(values)),
        ))
    return blocks


def calibration_figures(runs: list[RunResult], kind: str) -> list[FigureBlock]:
    """Every calibration block for the runs of one task kind (empty when none was calibrated)."""
    blocks = [b for b in [_scaled_block(runs, kind)] if b is not None]
    return blocks + _conformal_blocks(runs, kind)


def calibration_payload(runs: list[RunResult]) -> list[dict[str, Any]]:
    """For report.json: per calibrated run, the calibrator and its metric summaries."""
    return [
        {"label": r.label, "calibrator": r.calibrated["calibrator"], "metrics": r.calibrated["metrics"]}
        for r in runs if r.calibrated is not None
    ]
