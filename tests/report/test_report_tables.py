"""Report table and figure functions on hand-built runs: the best method per metric, the
Markdown/HTML/JSON cells, and what the coverage figure draws."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bayesmeta.report import RunResult
from bayesmeta.report.figures import coverage_figure, to_png
from bayesmeta.report.tables import (
    ci_level,
    comparison_table,
    table_to_html,
    table_to_json,
    table_to_markdown,
)


def _ci(mean: float, half: float = 0.01) -> dict[str, float]:
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": 10, "level": 0.9, "method": "bootstrap"}


_TASK_EFFECT = np.linspace(-0.05, 0.05, 10)  # the same 10 tasks for every run


def _run(label: str, kind: str, metrics: dict[str, dict[str, float]]) -> RunResult:
    # per-task values around each mean on the same tasks: "best" is decided by a paired test over
    # them (issue 10); the alternating +-0.001 keeps the paired differences from being constant
    jitter = 0.001 * (-1.0) ** np.arange(10)
    per_task = {k: ci["mean"] + _TASK_EFFECT + jitter for k, ci in metrics.items()}
    return RunResult(Path(label), label, label, kind, 10, metrics, per_task, None, None, None)


RUNS = [
    _run("a", "classification", {"accuracy": _ci(0.7), "nll": _ci(0.9), "coverage_90": _ci(0.5), "entropy": _ci(1.0)}),
    _run("b", "classification", {"accuracy": _ci(0.8), "nll": _ci(1.1), "entropy": _ci(0.2), "zeta": _ci(3.0)}),
    _run("c", "regression", {"mse": _ci(0.3)}),
]


def test_comparison_table_orders_columns_and_picks_the_best_per_metric() -> None:
    t = comparison_table(RUNS, "classification")
    assert t.task_kind == "classification" and [label for label, _ in t.rows] == ["a", "b"]
    # known metrics in METRIC_ORDER, then the others alphabetically
    assert t.columns == ["accuracy", "nll", "entropy", "coverage_90", "zeta"]
    # higher accuracy, lower nll; no best for descriptive (entropy), unknown (zeta) or one-run metrics
    assert t.best == {"accuracy": "b", "nll": "a"}
    assert ci_level(t) == "90%"
    reg = comparison_table(RUNS, "regression")
    assert reg.columns == ["mse"] and reg.best == {}  # one run: nothing to compare


def test_markdown_html_and_json_show_the_same_cells() -> None:
    t = comparison_table(RUNS, "classification")
    md = table_to_markdown(t)
    rows = {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[2:-1]] for ln in md.splitlines() if ln.startswith("| ")}
    assert rows["accuracy ↑"] == ["0.700 [0.690, 0.710]", "**0.800** [0.790, 0.810]"]
    assert rows["nll ↓"] == ["**0.900** [0.890, 0.910]", "1.100 [1.090, 1.110]"]
    assert rows["coverage_90 (→0.9)"] == ["0.500 [0.490, 0.510]", "—"]  # missing in run b
    assert "90% CI" in md
    html = table_to_html(t)
    assert html.count('class="best"') == 2
    assert '<td class="best">0.800 <span class="ci">[0.790, 0.810]</span></td>' in html
    js = table_to_json(t)
    assert js["best"] == {"accuracy": "b", "nll": "a"}
    assert js["rows"][1]["metrics"]["accuracy"]["mean"] == 0.8 and "coverage_90" not in js["rows"][1]["metrics"]
    assert js["metric_info"]["nll"]["better"] == "lower" and "zeta" not in js["metric_info"]


def test_html_escapes_method_labels() -> None:
    evil = [_run("<b>x</b>", "regression", {"mse": _ci(1.0)})]
    html = table_to_html(comparison_table(evil, "regression"))
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html


def test_coverage_figure_draws_the_diagonal_and_one_line_per_method() -> None:
    levels = np.array([0.5, 0.9, 0.95])
    fig = coverage_figure([("a", levels, np.array([0.4, 0.8, 0.9])), ("b", levels, np.array([0.6, 0.95, 0.99]))])
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert len(lines) == 3
    np.testing.assert_array_equal(lines[0].get_xydata(), [[0, 0], [1, 1]])  # nominal diagonal
    np.testing.assert_array_equal(lines[2].get_ydata(), [0.6, 0.95, 0.99])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["nominal", "a", "b"]
    assert ax.get_xlim() == (0, 1) and ax.get_ylim() == (0, 1)
    assert to_png(fig)[:8] == b"\x89PNG\r\n\x1a\n"
