"""``build_report``: run directories in, ``report.html`` / ``report.md`` / ``report.json`` out.

Runs are grouped by what they were evaluated on: the same task kind and the same episode
fingerprint (the very same tasks, see :class:`bayesmeta.evaluation.EpisodeHasher`). Each group
is its own section with its own table, figures and the protocol of each of its runs (method and
options, model, task family and settings, steps trained, seeds, episodes, n, versions); runs of
different groups are never put side by side and never ranked against each other. Within a
group a "best" is marked only when a paired test over the same tasks says so
(:mod:`bayesmeta.report.paired`). Tables hold per-task means; figures pool all query points,
and both are labelled as such.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
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
from bayesmeta.report.loading import RunResult, load_runs
from bayesmeta.report.tables import (
    Table,
    best_rule,
    ci_level,
    comparison_table,
    table_to_html,
    table_to_json,
    table_to_markdown,
)

__all__ = ["build_report", "group_runs", "RunGroup", "PER_TASK_METRICS"]

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
            "Top-label accuracy per confidence bin (15 equal-width bins). Pooled: all query points of all tasks "
            "together, so the ECE in the titles is the pooled ECE, which differs from the per-task mean ECE of the table; "
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
            "Histogram of F(y), the predictive CDF at the target, pooled over all query points, tasks and output dims; "
            "flat (the dashed line) means calibrated, a U-shape overconfident, a hump underconfident; numbers are bin counts.",
            to_png(pit_figure(hists)),
        ))
        cov = [
            (r.label, np.array(_COVERAGE_GRID), interval_coverage(r.predictive, r.targets, _COVERAGE_GRID, r.query_mask).mean(0).numpy())
            for r in have
        ]
        figs.append(FigureBlock(
            "Interval coverage",
            "Fraction of targets inside the central interval of each nominal level (per-task mean).",
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


@dataclass(frozen=True)
class RunGroup:
    """Runs evaluated on identical episodes (or a single run whose episodes are unknown).

    Attributes:
        task_kind: ``"classification"`` or ``"regression"``.
        fingerprint: the shared episode fingerprint, or None (an evaluation without one).
        runs: the runs, in the order given.
    """

    task_kind: str
    fingerprint: str | None
    runs: tuple[RunResult, ...]

    @property
    def title(self) -> str:
        """Kind, task family and settings, task count and the fingerprint's first digits."""
        r = self.runs[0]
        tasks = r.protocol.get("tasks") or {}
        settings = ", ".join(f"{k} {v}" for k, v in tasks.items() if k != "name")
        family = f"{tasks.get('name')}" + (f" ({settings})" if settings else "") if tasks else "tasks unknown"
        episodes = f"episodes {self.fingerprint[:12]}" if self.fingerprint else "episodes not fingerprinted"
        n = f"{len(self.runs)} run{'s' if len(self.runs) != 1 else ''}"
        return f"{self.task_kind.capitalize()}: {family}, {r.n_tasks} tasks, {episodes} ({n})"


def group_runs(runs: Sequence[RunResult]) -> list[RunGroup]:
    """Group runs by task kind and episode fingerprint, in order of first appearance.

    A run without a fingerprint (evaluated by an older version) is a group of its own: nothing
    says its tasks are those of any other run.
    """
    groups: dict[tuple[str, str], list[RunResult]] = {}
    for r in runs:
        key = (r.task_kind, r.episode_fingerprint or f"unknown:{r.run_dir.resolve()}")
        groups.setdefault(key, []).append(r)
    return [RunGroup(k[0], g[0].episode_fingerprint, tuple(g)) for k, g in groups.items()]


def _short(value: Any) -> str:
    if isinstance(value, dict):
        name = value.get("name")
        rest = ", ".join(f"{k}={_short(v)}" for k, v in value.items() if k != "name")
        return f"{name}" + (f" ({rest})" if rest else "") if name is not None else rest
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    return "—" if value is None else str(value)


def protocol_rows(run: RunResult) -> list[tuple[str, str]]:
    """The protocol of one run as ``(field, text)`` rows."""
    p = run.protocol
    versions = p.get("versions") or {}
    seeds = f"training {_short(p.get('training_seed'))}, evaluation {_short(p.get('evaluation_seed'))}"
    episodes = f"{_short(p.get('n_episodes'))} episodes, {run.n_tasks} tasks"
    if p.get("n_query_points") is not None:
        episodes += f", {p['n_query_points']} query points"
    steps = _short(p.get("steps_trained"))
    if p.get("checkpoint"):
        steps += f" ({p['checkpoint']} checkpoint)"
    train_tasks = p.get("train_tasks")
    rows = [
        ("method and options", _short(p.get("method"))),
        ("model", _short(p.get("model")) or "—"),
        ("task family and settings (evaluation)", _short(p.get("tasks"))),
    ]
    if train_tasks and train_tasks != p.get("tasks"):
        rows.append(("task settings (training)", _short(train_tasks)))
    rows += [
        ("steps trained", steps),
        ("seeds", seeds),
        ("episodes (n)", episodes),
        ("device, dtype", f"{_short(p.get('device'))}, {_short(p.get('dtype'))}"),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions.items() if k in ("bayesmeta", "torch", "python") and v) or "—"),
        ("episode fingerprint", (run.episode_fingerprint or "— (not recorded: re-run bayesmeta evaluate)")[:16]),
        ("config fingerprint", str(p.get("config_fingerprint") or "—")[:16]),
    ]
    return rows


def _protocol_grid(runs: Sequence[RunResult]) -> list[tuple[str, list[str]]]:
    """The protocol rows of several runs side by side, aligned by field: a run may have a row
    the others lack (training task settings that differ from the evaluation ones), and shows
    "same as evaluation" there."""
    rows_of = [protocol_rows(r) for r in runs]
    per_run = [dict(rows) for rows in rows_of]
    names = list(dict.fromkeys(name for rows in rows_of for name, _ in rows))
    missing = {"task settings (training)": "same as evaluation"}
    return [(n, [rows.get(n, missing.get(n, "—")) for rows in per_run]) for n in names]


def _protocol_html(runs: Sequence[RunResult]) -> str:
    e = html.escape
    head = "".join(f'<th scope="col">{e(r.label)}</th>' for r in runs)
    body = []
    for name, texts in _protocol_grid(runs):
        cells = "".join(f"<td>{e(t)}</td>" for t in texts)
        body.append(f'<tr><th scope="row">{e(name)}</th>{cells}</tr>')
    return (
        f'<table class="metrics protocol"><thead><tr><th scope="col">protocol</th>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _protocol_markdown(runs: Sequence[RunResult]) -> str:
    lines = ["| protocol | " + " | ".join(r.label.replace("|", "/") for r in runs) + " |", "|---|" + "---|" * len(runs)]
    for name, texts in _protocol_grid(runs):
        lines.append(f"| {name} | " + " | ".join(t.replace("|", "/") for t in texts) + " |")
    return "\n".join(lines) + "\n"


def _section(group: RunGroup, table: Table) -> Section:
    kind = group.task_kind
    sel = list(group.runs)
    figs = _classification_figures(sel) if kind == "classification" else _regression_figures(sel)
    block = _per_task_block(sel, kind)
    if block is not None:
        figs.append(block)
    figs.extend(calibration_figures(sel, kind))
    notes = [
        f"Per-task mean (each metric computed on each task, then averaged over tasks); brackets: the "
        f"{ci_level(table)} confidence interval (bootstrap over tasks). {best_rule()} "
        "↓ lower is better, ↑ higher, →x closest to x."
    ]
    if group.fingerprint is None:
        notes.append(
            "This run's evaluation recorded no episode fingerprint, so it is not compared with any other run; "
            "re-run `bayesmeta evaluate` to compare it."
        )
    undecided = [c for c in (table.tests or {}) if c not in table.best]
    if undecided:
        notes.append(f"No significant best for: {', '.join(undecided)}.")
    missing = [r.label for r in sel if r.predictive is None]
    if missing:
        notes.append(f"No eval/predictions.pt for {', '.join(missing)}: pooled figures omit them.")
    return Section(group.title, table_to_html(table), tuple(notes), tuple(figs), _protocol_html(sel))


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
            ``predictions.pt``; see :mod:`bayesmeta.report.loading`); a directory given twice
            is shown once.
        out_dir: where to write ``report.html`` (self-contained, figures embedded),
            ``report.md`` and ``report.json`` (the same tables); created if missing.

    Returns:
        The path of ``report.html``.
    """
    given = len(run_dirs)
    runs = load_runs(list(run_dirs))
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InvalidValueError(f"out_dir: expected a directory, got the file {str(out)!r}")
    out.mkdir(parents=True, exist_ok=True)
    groups = group_runs(runs)
    tables = [comparison_table(list(g.runs), g.task_kind) for g in groups]
    with torch.no_grad():
        sections = [_section(g, t) for g, t in zip(groups, tables, strict=True)]
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    intro = [
        f"Generated {stamp} from {len(runs)} run{'s' if len(runs) != 1 else ''} in {len(groups)} "
        f"group{'s' if len(groups) != 1 else ''}. Runs are compared only within a group evaluated on identical "
        "episodes (equal episode fingerprints); each group lists its runs' protocols. Tables hold per-task means; "
        "figures pool all query points."
    ]
    if given > len(runs):
        intro.append(f"{given - len(runs)} run director{'ies were' if given - len(runs) != 1 else 'y was'} given more than once and shown once.")
    run_list = [(r.label, str(r.run_dir)) for r in runs]
    html_path = out / "report.html"
    html_path.write_text(render_html(_TITLE, intro, run_list, sections), encoding="utf-8")

    md = [f"# {_TITLE}", "", *[p + "\n" for p in intro]]
    md += [f"- **{label}**: `{path}`" for label, path in run_list]
    for g, t, s in zip(groups, tables, sections, strict=True):
        md += ["", f"## {s.title}", "", "### Protocol", "", _protocol_markdown(g.runs), "### Results", "", table_to_markdown(t)]
        md += [n for n in s.notes[1:]]
    md += ["", "Figures (reliability diagrams, PIT histograms, risk–coverage curves, per-task distributions) are in report.html."]
    (out / "report.md").write_text("\n".join(md) + "\n", encoding="utf-8")

    payload = {
        "title": _TITLE,
        "generated": stamp,
        "runs": [
            {"label": r.label, "method": r.method, "run_dir": str(r.run_dir), "task_kind": r.task_kind,
             "n_tasks": r.n_tasks, "episode_fingerprint": r.episode_fingerprint, "protocol": r.protocol}
            for r in runs
        ],
        "groups": [
            {"title": s.title, "task_kind": g.task_kind, "episode_fingerprint": g.fingerprint,
             "runs": [r.label for r in g.runs], "table": table_to_json(t), "notes": list(s.notes)}
            for g, t, s in zip(groups, tables, sections, strict=True)
        ],
        "calibration": calibration_payload(runs),
        "figures": [{"section": s.title, "title": f.title, "caption": f.caption} for s in sections for f in s.figures],
    }
    (out / "report.json").write_text(json.dumps(_clean(payload), indent=2, allow_nan=False, default=str) + "\n", encoding="utf-8")
    return html_path
