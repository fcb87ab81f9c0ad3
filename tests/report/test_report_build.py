"""build_report: files, tables (HTML / Markdown / JSON agree with summary.json), figures, errors."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import torch

from bayesmeta.exceptions import BayesMetaError, DataError, InvalidValueError
from bayesmeta.metrics import reliability_diagram, risk_coverage_curve
from bayesmeta.report import build_report, load_runs
from bayesmeta.report.figures import (
    per_task_figure,
    pit_figure,
    reliability_figure,
    risk_coverage_figure,
    to_png,
)
from bayesmeta.report.tables import format_value

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_report_files_and_tables(make_run: Any, tmp_path: Path) -> None:
    runs = [
        make_run("maml", "classification", seed=0, temperature=3.0),
        make_run("bmaml", "classification", seed=1, shift=3.0),
        make_run("dkt", "regression", seed=2),
    ]
    out = tmp_path / "out"
    html_path = build_report(runs, out)
    assert html_path == out / "report.html"
    assert {p.name for p in out.iterdir()} == {"report.html", "report.md", "report.json"}

    text = html_path.read_text(encoding="utf-8")
    parser = _Tags()
    parser.feed(text)
    imgs = [a for t, a in parser.tags if t == "img"]
    assert len(imgs) == 3 + 4  # reliability, risk-coverage, per-task | PIT, coverage, risk-coverage, per-task
    assert all((a["src"] or "").startswith("data:image/png;base64,") and a.get("alt") for a in imgs)
    # self-contained: nothing is fetched
    for _, attrs in parser.tags:
        for key in ("src", "href"):
            value = attrs.get(key) or ""
            assert not re.match(r"^(https?:)?//", value), value
    assert "<script" not in text

    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert [r["label"] for r in report["runs"]] == ["maml", "bmaml", "dkt"]
    assert [g["task_kind"] for g in report["groups"]] == ["classification", "regression"]
    cls = report["groups"][0]["table"]
    assert cls["columns"][:4] == ["accuracy", "nll", "brier", "ece"]
    for row in cls["rows"]:
        summary = json.loads((runs[["maml", "bmaml"].index(row["method"])] / "eval" / "summary.json").read_text())
        assert row["metrics"] == summary["metrics"]
    acc = {row["method"]: row["metrics"]["accuracy"]["mean"] for row in cls["rows"]}
    # bmaml's predictions are shifted towards every task's label: significantly best
    assert cls["best"]["accuracy"] == max(acc, key=acc.get) == "bmaml"
    assert cls["paired_tests"]["accuracy"]["maml"]["p_value"] < 0.05
    for metric, label in cls["best"].items():  # a marked best is always the leader
        assert cls["leaders"][metric] == label
    assert "entropy" not in cls["best"]  # descriptive metrics are not ranked
    assert report["groups"][1]["table"]["best"] == {}  # a single run is never "best"
    assert len(report["figures"]) == 7

    md = (out / "report.md").read_text(encoding="utf-8")
    assert "| metric (per-task mean) | maml (n = 12 tasks) | bmaml (n = 12 tasks) |" in md
    best_acc = cls["rows"][[r["method"] for r in cls["rows"]].index(cls["best"]["accuracy"])]["metrics"]["accuracy"]
    assert f"**{format_value(best_acc['mean'])}** [{format_value(best_acc['low'])}, {format_value(best_acc['high'])}]" in md
    assert "| crps ↓ |" in md and "| coverage_90 (→0.9) |" in md
    # the HTML table carries the same numbers
    assert format_value(best_acc["mean"]) in text and 'class="best"' in text


def test_labels_missing_predictions_and_masks(make_run: Any, tmp_path: Path) -> None:
    runs = [
        make_run("maml", seed=0, mask=True),
        make_run("maml", seed=1, predictions=False),
    ]
    loaded = load_runs(runs)
    assert [r.label for r in loaded] == ["maml (maml-0)", "maml (maml-1)"]
    assert loaded[0].query_mask is not None and loaded[1].predictive is None
    assert loaded[0].per_task["accuracy"].shape == (12,)
    html_path = build_report(runs, tmp_path / "out")
    text = html_path.read_text(encoding="utf-8")
    assert "No eval/predictions.pt for maml (maml-1)" in text
    assert text.count("<img ") == 3


def test_bad_run_dirs(tmp_path: Path, make_run: Any) -> None:
    with pytest.raises(InvalidValueError, match="^run_dirs:"):
        build_report([], tmp_path / "out")
    with pytest.raises(InvalidValueError, match="^run_dir:"):
        build_report([tmp_path / "nope"], tmp_path / "out")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="summary.json"):
        build_report([empty], tmp_path / "out")
    run = make_run("x")
    summary = run / "eval" / "summary.json"
    data = json.loads(summary.read_text())
    summary.write_text(json.dumps({**data, "task_kind": "ranking"}))
    with pytest.raises(DataError, match="task_kind"):
        build_report([run], tmp_path / "out")
    summary.write_text("{not json")
    with pytest.raises(DataError, match="JSON"):
        build_report([run], tmp_path / "out")
    summary.write_text(json.dumps(data))
    torch.save({"targets": torch.zeros(2)}, run / "eval" / "predictions.pt")
    with pytest.raises(DataError, match="sample_log_probs"):
        build_report([run], tmp_path / "out")
    (run / "eval" / "predictions.pt").write_bytes(b"garbage")
    with pytest.raises(BayesMetaError, match="predictions.pt"):
        build_report([run], tmp_path / "out")


def _texts(fig: Figure) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_figures_are_labelled_with_diagonal_and_counts() -> None:
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(2 * torch.randn(500, 4, generator=g, dtype=torch.float64), -1)
    y = torch.multinomial(p, 1, generator=g).squeeze(-1)
    d = reliability_diagram(p, y, n_bins=10)
    fig = reliability_figure([("a", d), ("b", d)])
    ax = fig.axes[0]
    assert ax.get_xlabel() and ax.get_ylabel() and "ECE" in ax.get_title()
    diag = [ln for ln in ax.lines if np.allclose(ln.get_xydata(), [[0, 0], [1, 1]])]
    assert len(diag) == 1
    counts = [int(c) for c in d.count.tolist() if c > 0]
    numbers = [int(t) for t in (x.get_text() for x in ax.texts) if t.isdigit()]
    assert numbers == counts
    assert to_png(fig)[:8] == b"\x89PNG\r\n\x1a\n"

    hist = np.array([10, 12, 8, 10, 9, 11, 10, 10, 12, 8])
    pfig = pit_figure([("m", hist)])
    pax = pfig.axes[0]
    assert pax.get_xlabel() == "PIT value F(y)" and pax.get_ylabel() == "density"
    assert any(np.allclose(ln.get_ydata(), 1.0) for ln in pax.lines)  # the uniform density
    assert [int(t) for t in _texts(pfig) if t.isdigit()] == hist.tolist()

    rc = risk_coverage_curve(p, y)
    rfig = risk_coverage_figure([("a", rc)], "selective error rate")
    rax = rfig.axes[0]
    assert rax.get_ylabel() == "selective error rate" and "coverage" in rax.get_xlabel()
    assert "AURC" in rax.get_legend().get_texts()[0].get_text()

    tfig = per_task_figure({"ece": [("a", np.array([0.1, 0.2, np.nan])), ("b", np.array([0.3]))]})
    tax = tfig.axes[0]
    assert tax.get_ylabel() == "ece per task" and [t.get_text() for t in tax.get_xticklabels()] == ["a", "b"]


def test_per_task_only_metrics_and_bookkeeping_fields(make_run: Any) -> None:
    """A known metric found only in per_task.jsonl gets a CI; bookkeeping numbers are no metrics."""
    run = make_run("versa")
    summary_path = run / "eval" / "summary.json"
    summary = json.loads(summary_path.read_text())
    del summary["metrics"]["mce"]
    summary_path.write_text(json.dumps(summary))
    per_task_path = run / "eval" / "per_task.jsonl"
    rows = [json.loads(line) for line in per_task_path.read_text().splitlines()]
    per_task_path.write_text("\n".join(json.dumps({"task": i, **r}) for i, r in enumerate(rows)) + "\n")
    (loaded,) = load_runs([run])
    assert "task" not in loaded.summary and "task" in loaded.per_task
    mce = np.array([r["mce"] for r in rows])
    assert loaded.summary["mce"]["mean"] == pytest.approx(mce.mean())
    assert loaded.summary["mce"]["low"] <= mce.mean() <= loaded.summary["mce"]["high"]
