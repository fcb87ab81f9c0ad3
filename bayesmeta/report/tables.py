"""Comparison tables of methods × metrics with CIs, as plain data, Markdown and HTML.

One table per task kind. Cells hold the mean over tasks and its CI; the best method per metric
(by :data:`~bayesmeta.metrics.METRIC_INFO`'s ``better``: lowest, highest or closest to the
nominal value) is marked. Metrics without an ordering (entropies, sharpness) are not marked.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Any

from bayesmeta.metrics.task_metrics import METRIC_INFO, METRIC_ORDER
from bayesmeta.report.loading import RunResult

__all__ = ["Table", "ci_level", "comparison_table", "format_value", "table_to_markdown", "table_to_html", "table_to_json"]


@dataclass(frozen=True)
class Table:
    """A comparison table for one task kind.

    Attributes:
        task_kind: ``"classification"`` or ``"regression"``.
        columns: metric names in :data:`METRIC_ORDER` for the kind, then any others alphabetically.
        rows: ``(label, {metric: ci dict})`` per run.
        best: metric -> label of the best run (only for ordered metrics with two or more runs).
    """

    task_kind: str
    columns: list[str]
    rows: list[tuple[str, dict[str, dict[str, Any]]]]
    best: dict[str, str]


def _order(names: set[str], task_kind: str) -> list[str]:
    known = [k for k in METRIC_ORDER.get(task_kind, ()) if k in names]
    return known + sorted(names - set(known))


def _best(metric: str, rows: list[tuple[str, dict[str, dict[str, Any]]]]) -> str | None:
    info = METRIC_INFO.get(metric)
    vals = [(label, float(m[metric]["mean"])) for label, m in rows if metric in m and math.isfinite(float(m[metric]["mean"]))]
    if info is None or info.better == "none" or len(vals) < 2:
        return None
    if info.better == "lower":
        key = min(vals, key=lambda lv: lv[1])
    elif info.better == "higher":
        key = max(vals, key=lambda lv: lv[1])
    else:
        key = min(vals, key=lambda lv: abs(lv[1] - float(info.target or 0.0)))
    return key[0]


def comparison_table(runs: list[RunResult], task_kind: str) -> Table:
    """The table of every run of ``task_kind`` (rows in the given order)."""
    sel = [r for r in runs if r.task_kind == task_kind]
    columns = _order({k for r in sel for k in r.summary}, task_kind)
    rows = [(r.label, r.summary) for r in sel]
    best = {c: b for c in columns if (b := _best(c, rows)) is not None}
    return Table(task_kind, columns, rows, best)


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
    lines = ["| metric | " + " | ".join(lb.replace("|", "/") for lb in labels) + " |", "|---|" + "---|" * len(labels)]
    for c in table.columns:
        cells = []
        for label, metrics in table.rows:
            mean, ci = _cell(metrics.get(c))
            mean = f"**{mean}**" if table.best.get(c) == label else mean
            cells.append(f"{mean} {ci}".strip())
        lines.append(f"| {_metric_label(c)} | " + " | ".join(cells) + " |")
    legend = [f"- `{c}`: {METRIC_INFO[c].description}" for c in table.columns if c in METRIC_INFO]
    note = (
        f"Mean over tasks with its {ci_level(table)} CI over tasks in brackets; bold: best method. "
        "↓ lower is better, ↑ higher is better, →x closest to x."
    )
    return "\n".join(lines + ["", note, "", *legend]) + "\n"


def table_to_html(table: Table) -> str:
    """An HTML ``<table>``, one row per metric and one column per method.

    Every text is escaped; the best cell per metric has class ``best``; a metric's description
    is its row header's tooltip and is also shown under its name.
    """
    e = html.escape
    head = "".join(f'<th scope="col">{e(label)}</th>' for label, _ in table.rows)
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
        f'<table class="metrics"><thead><tr><th scope="col">metric</th>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def table_to_json(table: Table) -> dict[str, Any]:
    """Plain-JSON form: columns, one row per run with every CI, and the best run per metric."""
    return {
        "task_kind": table.task_kind,
        "columns": table.columns,
        "rows": [{"method": label, "metrics": {c: metrics[c] for c in table.columns if c in metrics}} for label, metrics in table.rows],
        "best": table.best,
        "metric_info": {
            c: {"description": METRIC_INFO[c].description, "better": METRIC_INFO[c].better, "target": METRIC_INFO[c].target}
            for c in table.columns
            if c in METRIC_INFO
        },
    }
