"""The study report: one HTML page (and a JSON twin) grouped by dataset.

Per dataset: the episode design and protocol, a clinical metrics table (mean and 95% bootstrap
CI over test tasks per method), reliability diagrams, referral curves (accuracy of the retained
cases against the referral rate, with the operating point of the rule fitted on validation
episodes) and decision curves (net benefit with treat-all and treat-none).
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bayesmeta.io import atomic_write_text
from bayesmeta.metrics import MeanCI, reliability_diagram, risk_coverage_curve
from bayesmeta.report.figures import new_figure, reliability_figure, to_png
from bayesmeta.report.html import FigureBlock, Section, render_html

__all__ = ["TABLE_COLUMNS", "write_study_report", "referral_figure", "decision_figure"]

#: (source, metric, header, scale) of the table columns; source "summary" = task metrics,
#: "clinical", or "referral" (the rule applied to the test episodes).
TABLE_COLUMNS: tuple[tuple[str, str, str, float], ...] = (
    ("summary", "accuracy", "accuracy (%)", 100.0),
    ("clinical", "balanced_accuracy", "balanced acc. (%)", 100.0),
    ("clinical", "auroc", "AUROC", 1.0),
    ("clinical", "sensitivity", "sensitivity", 1.0),
    ("clinical", "specificity", "specificity", 1.0),
    ("clinical", "sensitivity_at_specificity", "sens. @ spec.", 1.0),
    ("clinical", "ppv", "PPV", 1.0),
    ("clinical", "npv", "NPV", 1.0),
    ("clinical", "missed_positive_rate", "missed pos. / case", 1.0),
    ("summary", "ece", "ECE", 1.0),
    ("summary", "nll", "NLL", 1.0),
    ("referral", "retained_accuracy", "referral: retained acc. (%)", 100.0),
    ("referral", "referral_rate", "referral rate (%)", 100.0),
    ("referral", "retained_sensitivity", "retained sensitivity", 1.0),
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _cell(ci: MeanCI | None, scale: float) -> str:
    if ci is None:
        return "<td>—</td>"
    digits = 1 if scale == 100.0 else 3
    n = f", n={ci.n}" if ci.n else ""
    return (
        f"<td>{ci.mean * scale:.{digits}f}<br><span class=\"ci\">[{ci.low * scale:.{digits}f}, "
        f"{ci.high * scale:.{digits}f}]{n}</span></td>"
    )


def _table(results: Sequence[Any]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for _, _, h, _ in TABLE_COLUMNS)
    rows = []
    for r in results:
        name = e(r.method) if r.fold == "cross_domain" else f"{e(r.method)}<br><span class=\"desc\">{e(r.fold)}</span>"
        if r.skipped:
            rows.append(f"<tr><th>{name}</th><td colspan=\"{len(TABLE_COLUMNS)}\">not evaluated: {e(r.skipped)}</td></tr>")
            continue
        cells = []
        for src, metric, _, scale in TABLE_COLUMNS:
            d = r.summary if src == "summary" else r.clinical if src == "clinical" else r.referral.summary
            cells.append(_cell(d.get(metric), scale))
        rows.append(f"<tr><th>{name}</th>{''.join(cells)}</tr>")
    return (
        f'<table class="metrics"><thead><tr><th>method</th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def referral_figure(curves: Sequence[tuple[str, Any, tuple[float, float] | None]], target: float | None) -> Figure:
    """Accuracy of the retained cases against the referral rate, one line per method.

    Args:
        curves: ``(label, RiskCoverage, (referral_rate, retained_accuracy) of the fitted rule on
            the test episodes or None)``.
        target: the rule's target accuracy (dashed line), if it has one.
    """
    fig = new_figure(figsize=(6.0, 4.2), layout="constrained")
    ax = fig.subplots()
    for i, (label, rc, point) in enumerate(curves):
        color = f"C{i}"
        cov, risk = rc.coverage.numpy(), rc.risk.numpy()
        ax.plot(100 * (1 - cov), 100 * (1 - risk), color=color, label=label)
        if point is not None and not math.isnan(point[1]):
            ax.plot(100 * point[0], 100 * point[1], "o", color=color, markeredgecolor="k")
    if target is not None:
        ax.axhline(100 * target, color="grey", ls="--", lw=1, label=f"target {100 * target:.0f}%")
    ax.set_xlabel("cases referred (%), most uncertain first")
    ax.set_ylabel("accuracy of retained cases (%)")
    ax.set_xlim(0, 100)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def decision_figure(curves: Sequence[tuple[str, Any]]) -> Figure:
    """Net benefit against threshold probability, with treat-all and treat-none references."""
    fig = new_figure(figsize=(6.0, 4.2), layout="constrained")
    ax = fig.subplots()
    lo = 0.0
    for i, (label, c) in enumerate(curves):
        pt = c.thresholds.numpy()
        ax.plot(pt, c.net_benefit.numpy(), color=f"C{i}", label=label)
        lo = min(lo, float(c.net_benefit.min()))
    if curves:
        c = curves[0][1]
        ax.plot(c.thresholds.numpy(), c.treat_all.numpy(), color="k", ls=":", label="treat all")
        ax.plot(c.thresholds.numpy(), c.treat_none.numpy(), color="k", ls="-", lw=0.8, label="treat none")
        top = max(float(c.treat_all.max()), max(float(cc.net_benefit.max()) for _, cc in curves))
        ax.set_ylim(max(lo, -0.1) - 0.02, top + 0.05)
    ax.set_xlabel("threshold probability")
    ax.set_ylabel("net benefit")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def _design(cfg: dict[str, Any], dataset: str) -> str:
    d = cfg["datasets"][dataset]
    t = d["tasks"]
    src = t.get("dataset") or t.get("path") or t["name"]
    support = t.get("support_split") or "test"
    query = t.get("query_split") or "test"
    disjoint = "" if support != query else " (disjoint from the support cases)"
    return (
        f"Episodes on {src}: {t.get('n_way') or 'all'} classes, class identity {t.get('class_identity', 'fixed')}; "
        f"K = {t['k_shot']} support cases per class from the {support} split; {t['n_query']} x n_way queries from the "
        f"{query} split{disjoint} at {t.get('prevalence', 'balanced')} prevalence; positive class(es) {d['positive']}. "
        f"{d.get('description', '')}"
    )


def _section(dataset: str, results: Sequence[Any], cfg: dict[str, Any], folds: Sequence[Any]) -> Section:
    ev, ref = cfg["evaluation"], cfg["referral"]
    done = [r for r in results if not r.skipped]
    notes = [_design(cfg, dataset)]
    notes += [f"Protocol {f.name}: {f.description}." for f in folds if dataset in f.datasets]
    notes.append(
        f"{ev['n_episodes']} test episodes (seed {ev['seed']}); cells are the mean over tasks with a 95% bootstrap CI "
        f"and n, the number of tasks where the metric is defined. Threshold {ev['threshold']} on the positive "
        f"probability; sensitivity at specificity {ev['target_specificity']} uses the best threshold per task (an oracle "
        f"operating point). PPV/NPV at the episode's prevalence."
    )
    for r in done:
        rule = r.rule
        v = rule.validation
        kept = (
            "no case was retained" if math.isnan(v["retained_accuracy"])
            else f"retained accuracy {100 * v['retained_accuracy']:.1f}%"
        )  # fmt: skip
        test = r.referral.pooled
        kept_test = (
            "no case retained" if math.isnan(test["retained_accuracy"])
            else f"retained accuracy {100 * test['retained_accuracy']:.1f}%"
        )  # fmt: skip
        notes.append(
            f"{r.method} ({r.fold}) referral rule: refer when {rule.score} > {rule.tau:.4g}, fitted on "
            f"{ev['val_episodes']} validation episodes for {rule.objective} {rule.params}. On validation it referred "
            f"{100 * v['referral_rate']:.1f}% ({kept}); on the test episodes {100 * test['referral_rate']:.1f}% "
            f"({kept_test}, pooled)."
        )
    figs = []
    if done:
        diagrams = [(r.method, reliability_diagram(r.predictive, r.targets, 15)) for r in done]
        figs.append(FigureBlock(
            "Reliability diagrams", "Top-label accuracy per confidence bin (15 bins), all test queries pooled; "
            "the diagonal is perfect calibration.", to_png(reliability_figure(diagrams)),
        ))  # fmt: skip
        curves = [
            (r.method, risk_coverage_curve(r.predictive, r.targets, r.rule.score),
             (r.referral.pooled["referral_rate"], r.referral.pooled["retained_accuracy"]))
            for r in done
        ]  # fmt: skip
        target = ref["target_accuracy"] if ref["objective"] == "accuracy" else None
        figs.append(FigureBlock(
            "Referral curves", "Accuracy of the cases the model keeps as the most uncertain are referred (test "
            "episodes pooled); dots: what the rule fitted on validation episodes achieved on the test episodes.",
            to_png(referral_figure(curves, target)),
        ))  # fmt: skip
        figs.append(FigureBlock(
            "Decision curves", "Net benefit of calling positive when the positive probability exceeds the threshold "
            "probability, averaged over test episodes; a model helps where it is above both treat-all and treat-none.",
            to_png(decision_figure([(r.method, r.curve) for r in done])),
        ))  # fmt: skip
    return Section(f"Dataset: {dataset}", _table(results), tuple(notes), tuple(figs))


def _json(study: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": study.config["name"], "protocol": study.config["protocol"], "datasets": {}}
    for r in study.results:
        entry: dict[str, Any] = {"method": r.method, "fold": r.fold}
        if r.skipped:
            entry["skipped"] = r.skipped
        else:
            entry["metrics"] = {k: v.to_dict() for k, v in r.summary.items()}
            entry["clinical"] = {k: v.to_dict() for k, v in r.clinical.items()}
            entry["referral"] = {k: v.to_dict() for k, v in r.referral.summary.items()}
            entry["rule"] = {"score": r.rule.score, "tau": r.rule.tau, "validation": r.rule.validation}
        out["datasets"].setdefault(r.dataset, []).append(entry)
    return out


def write_study_report(study: Any, out: str | Path, folds: Sequence[Any]) -> Path:
    """Write ``report.html`` and ``report.json`` into ``out``; returns the HTML path."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    cfg = study.config
    sections = [_section(ds, study.for_dataset(ds), cfg, folds) for ds in cfg["datasets"]]
    intro = [
        f"{cfg['name']}. Protocol: {cfg['protocol']}. {cfg.get('description', '')}",
        f"Generated {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}. Training: {cfg['training']}.",
    ]
    runs = sorted({(f"{r.method} ({r.fold})", str(r.run_dir)) for r in study.results if r.run_dir is not None})
    page = render_html(f"bayesmeta study: {cfg['name']}", intro, runs, sections)
    atomic_write_text(page, d / "report.html")
    atomic_write_text(json.dumps(_json(study), indent=2, allow_nan=True), d / "report.json")
    return d / "report.html"
