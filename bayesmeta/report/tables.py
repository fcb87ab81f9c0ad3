"""Comparison tables of methods × metrics with CIs, as plain data, Markdown and HTML.

One table per group of runs evaluated on identical episodes. Cells hold the *per-task mean*
(each metric computed on each task, then averaged over tasks) and its CI over tasks. A run is
marked best for a metric (by :data:`~bayesmeta.metrics.METRIC_INFO`'s ``better``: lowest,
highest or closest to the nominal value) only when a paired bootstrap over the group's tasks
says it beats every other run (:func:`bayesmeta.report.paired.select_best`); a leader that is
not significantly ahead is not marked. Metrics without an ordering (entropies, sharpness) are
never marked.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from bayesmeta.metrics.task_metrics import METRIC_INFO, METRIC_ORDER
from bayesmeta.report.loading import RunResult
from bayesmeta.report.paired import ALPHA, N_RESAMPLES, PairedTest, select_best

__all__ = ["Table", "best_rule", "ci_level", "comparison_table", "format_value", "table_to_markdown", "table_to_html", "table_to_json"]


@dataclass(frozen=True)
class Table:
    """A comparison table for one task kind.

    Attributes:
        task_kind: ``"classification"`` or ``"regression"``.
        columns: metric names in :data:`METRIC_ORDER` for the kind, then any others alphabetically.
        rows: ``(label, {metric: ci dict})`` per run.
        best: metric -> label of the significantly best run (ordered metrics, two or more runs,
            paired test significant against every other run).
        tests: metric -> {other label: paired test of the leader against it}, for every ordered
            metric with two or more runs (also where no run is significantly best).
        leaders: metric -> label of the run with the best aggregate (significant or not).
        n_tasks: label -> number of evaluation tasks.
    """

    task_kind: str
    columns: list[str]
    rows: list[tuple[str, dict[str, dict[str, Any]]]]
    best: dict[str, str]
    tests: dict[str, dict[str, PairedTest]] | None = None
    leaders: dict[str, str] | None = None
    n_tasks: dict[str, int] | None = None


def _order(names: set[str], task_kind: str) -> list[str]:
    known = [k for k in METRIC_ORDER.get(task_kind, ()) if k in names]
    return known + sorted(names - set(known))


def comparison_table(runs: list[RunResult], task_kind: str | None = None) -> Table:
    """The table of ``runs`` (of ``task_kind``, when given), rows in the given order.

    The runs should form one group evaluated on identical episodes: "best" is decided by a paired
    test over their per-task values, task by task.
    """
    sel = [r for r in runs if task_kind is None or r.task_kind == task_kind]
    kind = task_kind or (sel[0].task_kind if sel else "classification")
    columns = _order({k for r in sel for k in r.summary}, kind)
    rows = [(r.label, r.summary) for r in sel]
    best: dict[str, str] = {}
    tests: dict[str, dict[str, PairedTest]] = {}
    leaders: dict[str, str] = {}
    sizes = {r.per_task[c].size for r in sel for c in columns if c in r.per_task}
    for c in columns:
        info = METRIC_INFO.get(c)
        if info is None or info.better == "none" or len(sizes) != 1:
            continue
        values = {r.label: r.per_task[c] for r in sel if c in r.per_task and np.isfinite(r.per_task[c]).sum() >= 2}
        if len(values) < 2:
            continue
        winner, pair = select_best(values, info.better, info.target)
        tests[c] = pair
        leaders[c] = next(iter(set(values) - set(pair)))
        if winner is not None:
            best[c] = winner
    return Table(kind, columns, rows, best, tests, leaders, {r.label: r.n_tasks for r in sel})


def best_rule() -> str:
    """One sentence on how "best" is decided, for table notes."""
    return (
        f"Best (bold/green): ahead of every other run of this group in a paired bootstrap over the same "
        f"tasks ({N_RESAMPLES:,} resamples, Holm-corrected p < {ALPHA:g}); no mark when the leader is not "
        f"significantly ahead."
    )


def format_value(x: float) -> str:
    """Three decimals in the usual range, three significant digits outside it."""
    if not math.isfinite(x):
        return str(x)
    if x == 0 or 1e-3 <= abs(x) < 1e4:
        return f"{x:.3f}"
    return f"{x:.3g}"


def _cell(ci: dict[str, Any] | None) -> tuple[str, str]:
    """(mean, "[low, high]") strings."""
    if ci is None:
        return "—", ""
    return format_value(float(ci["mean"])), f"[{format_value(float(ci['low']))}, {format_value(float(ci['high']))}]"


def _direction(metric: str) -> str:
    info = METRIC_INFO.get(metric)
    if info is None or info.better == "none":
        return ""
    if info.better == "nominal":
        return f" (→{info.target:g})"
    return " ↓" if info.better == "lower" else " ↑"


def _head(table: Table, label: str) -> str:
    n = (table.n_tasks or {}).get(label)
    return label if n is None else f"{label} (n = {n} tasks)"


def ci_level(table: Table) -> str:
    """The CIs' nominal level as a percentage string (``"95%"``)."""
    for _, metrics in table.rows:
        for ci in metrics.values():
            if "level" in ci:
                return f"{100 * float(ci['level']):g}%"
    return "95%"


def _metric_label(metric: str) -> str:
    return metric + _direction(metric)


def table_to_markdown(table: Table) -> str:
    """A GitHub-flavoured Markdown table, one row per metric and one column per method.

    The best value per metric is in bold; a legend of the metrics follows the table.
    """
    labels = [label for label, _ in table.rows]
    heads = [_head(table, lb).replace("|", "/") for lb in labels]
    lines = ["| metric (per-task mean) | " + " | ".join(heads) + " |", "|---|" + "---|" * len(labels)]
    for c in table.columns:
        cells = []
        for label, metrics in table.rows:
            mean, ci = _cell(metrics.get(c))
            mean = f"**{mean}**" if table.best.get(c) == label else mean
            cells.append(f"{mean} {ci}".strip())
        lines.append(f"| {_metric_label(c)} | " + " | ".join(cells) + " |")
    legend = [f"- `{c}`: {METRIC_INFO[c].description}" for c in table.columns if c in METRIC_INFO]
    note = (
        f"Per-task mean (each metric computed per task, then averaged over tasks) with its {ci_level(table)} CI "
        f"over tasks in brackets. {best_rule()} ↓ lower is better, ↑ higher is better, →x closest to x."
    )
    return "\n".join(lines + ["", note, "", *legend]) + "\n"


def table_to_html(table: Table) -> str:
    """An HTML ``<table>``, one row per metric and one column per method.

    Every text is escaped; the best cell per metric has class ``best``; a metric's description
    is its row header's tooltip and is also shown under its name.
    """
    e = html.escape
    head = "".join(f'<th scope="col">{e(_head(table, label))}</th>' for label, _ in table.rows)
    body = []
    for c in table.columns:
        desc = METRIC_INFO[c].description if c in METRIC_INFO else ""
        tds = []
        for label, metrics in table.rows:
            mean, ci = _cell(metrics.get(c))
            cls = ' class="best"' if table.best.get(c) == label else ""
            tds.append(f'<td{cls}>{e(mean)} <span class="ci">{e(ci)}</span></td>')
        body.append(
            f'<tr><th scope="row" title="{e(desc)}">{e(_metric_label(c))}'
            f'<br><span class="desc">{e(desc)}</span></th>{"".join(tds)}</tr>'
        )
    return (
        f'<table class="metrics"><thead><tr><th scope="col">metric (per-task mean)</th>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def table_to_json(table: Table) -> dict[str, Any]:
    """Plain-JSON form: columns, one row per run with every CI, and the best run per metric."""
    return {
        "task_kind": table.task_kind,
        "columns": table.columns,
        "rows": [{"method": label, "metrics": {c: metrics[c] for c in table.columns if c in metrics}} for label, metrics in table.rows],
        "best": table.best,
        "leaders": table.leaders or {},
        "n_tasks": table.n_tasks or {},
        "paired_tests": {
            c: {other: t.to_dict() for other, t in pair.items()} for c, pair in (table.tests or {}).items()
        },
        "aggregation": "per-task mean",
        "metric_info": {
            c: {"description": METRIC_INFO[c].description, "better": METRIC_INFO[c].better, "target": METRIC_INFO[c].target}
            for c in table.columns
            if c in METRIC_INFO
        },
    }
