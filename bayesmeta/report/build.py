"""``build_report``: run directories in, ``report.html`` / ``report.md`` / ``report.json`` out."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bayesmeta.exceptions import InvalidValueError
from bayesmeta.metrics.classification import reliability_diagram
from bayesmeta.metrics.regression import interval_coverage, pit_histogram
from bayesmeta.metrics.selective import risk_coverage_curve
from bayesmeta.report.calibration import calibration_figures, calibration_payload
from bayesmeta.report.figures import (
    coverage_figure,
    per_task_figure,
    pit_figure,
    reliability_figure,
    risk_coverage_figure,
    to_png,
)
from bayesmeta.report.html import FigureBlock, Section, render_html
from bayesmeta.report.loading import TASK_KINDS, RunResult, load_runs
from bayesmeta.report.tables import (
    Table,
    ci_level,
    comparison_table,
    table_to_html,
    table_to_json,
    table_to_markdown,
)

__all__ = ["build_report", "PER_TASK_METRICS"]

PER_TASK_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "nll", "ece", "brier", "aurc", "mutual_information"),
    "regression": ("mse", "nll", "crps", "pit_error", "coverage_90", "sharpness"),
}
"""Metrics whose per-task distributions are plotted (those present in per_task.jsonl)."""

_COVERAGE_GRID = tuple(round(0.05 * k, 2) for k in range(1, 20))
_TITLE = "bayesmeta report"


def _with_predictions(runs: list[RunResult]) -> list[RunResult]:
    return [r for r in runs if r.predictive is not None]


def _classification_figures(runs: list[RunResult]) -> list[FigureBlock]:
    figs: list[FigureBlock] = []
    have = _with_predictions(runs)
    if have:
        diagrams = [(r.label, reliability_diagram(r.predictive, r.targets, 15, mask=r.query_mask)) for r in have]
        figs.append(FigureBlock(
            "Reliability diagrams",
            "Top-label accuracy per confidence bin (15 equal-width bins, all query points of all tasks pooled); "
            "the dashed diagonal is perfect calibration and the numbers along the top are the bins' point counts. "
            "Bars below the diagonal mean overconfidence.",
            to_png(reliability_figure(diagrams)),
        ))
        curves = [(r.label, risk_coverage_curve(r.predictive, r.targets, "entropy", r.query_mask)) for r in have]
        figs.append(FigureBlock(
            "Risk–coverage curves",
            "Error rate on the cases kept when the most uncertain (highest predictive entropy) are referred; "
            "dotted lines: the error rate without referral. Lower and steeper is better.",
            to_png(risk_coverage_figure(curves, "selective error rate (1 − accuracy)")),
        ))
    return figs


def _regression_figures(runs: list[RunResult]) -> list[FigureBlock]:
    figs: list[FigureBlock] = []
    have = _with_predictions(runs)
    if have:
        hists = [(r.label, pit_histogram(r.predictive, r.targets, 10, r.query_mask).numpy()) for r in have]
        figs.append(FigureBlock(
            "PIT histograms",
            "Histogram of F(y), the predictive CDF at the target, over all query points, tasks and output dims; "
            "flat (the dashed line) means calibrated; numbers are bin counts.",
            to_png(pit_figure(hists)),
        ))
        cov = [
            (r.label, np.array(_COVERAGE_GRID), interval_coverage(r.predictive, r.targets, _COVERAGE_GRID, r.query_mask).mean(0).numpy())
            for r in have
        ]
        figs.append(FigureBlock(
            "Interval coverage",
            "Fraction of targets inside the central interval of each nominal level (mean over tasks).",
            to_png(coverage_figure(cov)),
        ))
        curves = [(r.label, risk_coverage_curve(r.predictive, r.targets, "entropy", r.query_mask)) for r in have]
        figs.append(FigureBlock(
            "Risk–coverage curves",
            "Mean squared error on the cases kept when the most uncertain (largest predictive entropy) are referred; "
            "dotted lines: the MSE without referral.",
            to_png(risk_coverage_figure(curves, "selective MSE")),
        ))
    return figs


def _per_task_block(runs: list[RunResult], kind: str) -> FigureBlock | None:
    values: dict[str, list[tuple[str, np.ndarray]]] = {}
    for name in PER_TASK_METRICS[kind]:
        series = [(r.label, r.per_task[name]) for r in runs if name in r.per_task and np.isfinite(r.per_task[name]).any()]
        if series:
            values[name] = series
    if not values:
        return None
    return FigureBlock(
        "Per-task metric distributions",
        "Each point is one evaluation task; boxes show quartiles. Few-shot results vary mostly between tasks.",
        to_png(per_task_figure(values)),
    )


def _section(runs: list[RunResult], table: Table) -> Section:
    kind = table.task_kind
    sel = [r for r in runs if r.task_kind == kind]
    figs = _classification_figures(sel) if kind == "classification" else _regression_figures(sel)
    block = _per_task_block(sel, kind)
    if block is not None:
        figs.append(block)
    figs.extend(calibration_figures(sel, kind))
    notes = [
        f"Mean over tasks; brackets: the {ci_level(table)} confidence interval (bootstrap over tasks). "
        "Green: best method for that metric (↓ lower is better, ↑ higher, →x closest to x)."
    ]
    missing = [r.label for r in sel if r.predictive is None]
    if missing:
        notes.append(f"No eval/predictions.pt for {', '.join(missing)}: pooled figures omit them.")
    return Section(f"{kind.capitalize()} ({len(sel)} run{'s' if len(sel) != 1 else ''})", table_to_html(table), tuple(notes), tuple(figs))


def _clean(x: Any) -> Any:
    """JSON-safe copy: NaN/Inf become None, tensors and numpy scalars become Python values."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if isinstance(x, torch.Tensor | np.ndarray):
        return _clean(x.tolist())
    if isinstance(x, np.generic):
        return _clean(x.item())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def build_report(run_dirs: Sequence[str | Path], out_dir: str | Path) -> Path:
    """Compare evaluated runs in one report.

    Args:
        run_dirs: run directories with ``eval/summary.json`` (and ideally ``per_task.jsonl`` and
            ``predictions.pt``; see :mod:`bayesmeta.report.loading`).
        out_dir: where to write ``report.html`` (self-contained, figures embedded),
            ``report.md`` and ``report.json`` (the same tables); created if missing.

    Returns:
        The path of ``report.html``.
    """
    runs = load_runs(list(run_dirs))
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InvalidValueError(f"out_dir: expected a directory, got the file {str(out)!r}")
    out.mkdir(parents=True, exist_ok=True)
    tables = [comparison_table(runs, k) for k in TASK_KINDS if any(r.task_kind == k for r in runs)]
    with torch.no_grad():
        sections = [_section(runs, t) for t in tables]
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    intro = [
        f"Generated {stamp} from {len(runs)} run{'s' if len(runs) != 1 else ''}. "
        "Metrics are computed per evaluation task and averaged over tasks."
    ]
    run_list = [(r.label, str(r.run_dir)) for r in runs]
    html_path = out / "report.html"
    html_path.write_text(render_html(_TITLE, intro, run_list, sections), encoding="utf-8")

    md = [f"# {_TITLE}", "", intro[0], ""]
    md += [f"- **{label}**: `{path}`" for label, path in run_list]
    for t, s in zip(tables, sections, strict=True):
        md += ["", f"## {s.title}", "", table_to_markdown(t)]
    md += ["", "Figures (reliability diagrams, PIT histograms, risk–coverage curves, per-task distributions) are in report.html."]
    (out / "report.md").write_text("\n".join(md) + "\n", encoding="utf-8")

    payload = {
        "title": _TITLE,
        "generated": stamp,
        "runs": [
            {"label": r.label, "method": r.method, "run_dir": str(r.run_dir), "task_kind": r.task_kind, "n_tasks": r.n_tasks}
            for r in runs
        ],
        "tables": {t.task_kind: table_to_json(t) for t in tables},
        "calibration": calibration_payload(runs),
        "figures": [{"section": s.title, "title": f.title, "caption": f.caption} for s in sections for f in s.figures],
    }
    (out / "report.json").write_text(json.dumps(_clean(payload), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return html_path
