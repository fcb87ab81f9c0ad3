"""Benchmark records: one flat JSON object per (suite, method), the results files and the docs tables.

A record holds the suite, the method, every summary metric as ``name`` (the mean over test tasks)
and ``name_ci`` (its 95% bootstrap interval over tasks), the budget and what training used
(``budget_s``, ``cpu_s``, ``steps``, ``stopped``), and the episode fingerprint (equal
fingerprints: the very same test tasks). Classification records add ``pooled_ece`` (all query
points of all tasks in one set of 15 bins, the figure the reliability diagrams show).

Files: ``<results>/<suite>.json`` is ``{"meta": {...}, "records": [...]}``;
``<results>/uncertainty.json`` is the list of the records of every classification suite (one
suite's records are replaced when it is run again, the others kept). In a Markdown file, the
block between ``<!-- bayesmeta-benchmark:<suite>:start -->`` and ``...:end -->`` is regenerated
(appended at the end of the file when absent) with the date, machine, command and budget.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from bayesmeta.benchmark.suites import SUITES, Suite
from bayesmeta.evaluation import EvaluationResult
from bayesmeta.exceptions import DataError
from bayesmeta.io import atomic_write_text

__all__ = [
    "RECORD_KEYS",
    "failed_record",
    "make_record",
    "write_results",
    "update_docs",
    "markdown_table",
    "machine_description",
]

#: Keys every classification record has (the issue's schema); regression records have ``mse`` etc. instead.
RECORD_KEYS: tuple[str, ...] = (
    "suite", "method", "accuracy", "accuracy_ci", "ece", "nll", "brier", "aurc", "budget_s", "steps",
)  # fmt: skip


def machine_description() -> str:
    """Cores, architecture, torch version and threads of this machine (for results and docs)."""
    return (
        f"{os.cpu_count()}-core {platform.machine()} CPU, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch thread(s), Python {platform.python_version()}"
    )


def pooled_ece(predictions: Mapping[str, torch.Tensor]) -> float | None:
    """The ECE of every present query point of every task in one set of 15 bins.

    Args:
        predictions: an evaluation's saved predictions (``EvaluationResult.predictions`` or a
            run's ``eval/predictions.pt``): ``sample_log_probs`` ``[M, T, Q, C]`` (members of a
            uniform mixture), ``targets`` ``[T, Q]`` and optionally ``query_mask`` ``[T, Q]``.

    Returns:
        The pooled ECE of the mixture probabilities, or ``None`` when the predictions are not
        classification ones.
    """
    from bayesmeta.metrics import ece

    lp = predictions.get("sample_log_probs")
    y = predictions.get("targets")
    if lp is None or y is None:
        return None
    probs = torch.logsumexp(lp.double(), 0).exp() / lp.shape[0]  # mixture over members, [T, Q, C]
    mask = predictions.get("query_mask")
    flat_p = probs.reshape(-1, probs.shape[-1])
    flat_y = y.reshape(-1)
    if mask is not None:
        keep = mask.reshape(-1)
        flat_p, flat_y = flat_p[keep], flat_y[keep]
    flat_p = flat_p / flat_p.sum(-1, keepdim=True)
    return float(ece(flat_p, flat_y, 15))


def make_record(
    suite: Suite, method: str, res: EvaluationResult, *, budget_s: float, ledger: dict[str, Any], stopped: str,
    max_steps: int,
) -> dict[str, Any]:  # fmt: skip
    """The flat record of one evaluated method (see the module docstring)."""
    rec: dict[str, Any] = {"suite": suite.name, "method": method, "kind": res.task_kind}
    for name, ci in res.summary.items():
        rec[name] = ci.mean
        rec[f"{name}_ci"] = [ci.low, ci.high]
    if res.task_kind == "classification":
        rec["pooled_ece"] = pooled_ece(res.predictions)
    rec.update(
        budget_s=float(budget_s),
        cpu_s=round(float(ledger.get("cpu_s", 0.0)), 2),
        steps=int(ledger.get("steps", 0)),
        max_steps=int(max_steps),
        stopped=stopped,
        n_tasks=res.n_tasks,
        episode_fingerprint=res.episode_fingerprint,
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )
    if "temperature" in res.protocol:
        rec["temperature"] = res.protocol["temperature"]
    if ledger.get("diverged"):  # evaluated at the best checkpoint validated before it diverged
        rec["diverged"] = str(ledger["diverged"])
    return rec


def failed_record(
    suite: Suite, method: str, *, budget_s: float, ledger: dict[str, Any], max_steps: int, stopped: str,
    error: str,
) -> dict[str, Any]:  # fmt: skip
    """The record of a method that has no metrics: training diverged before any validated
    checkpoint (``stopped="diverged"``), or the evaluation itself failed (``error`` says which).

    Tables print a dash for every metric and the reason under the table.
    """
    rec = {
        "suite": suite.name, "method": method, "kind": suite.kind, "budget_s": float(budget_s),
        "cpu_s": round(float(ledger.get("cpu_s", 0.0)), 2), "steps": int(ledger.get("steps", 0)),
        "max_steps": int(max_steps), "stopped": stopped, "error": error,
        "n_tasks": 0, "episode_fingerprint": None, "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }  # fmt: skip
    if ledger.get("diverged"):
        rec["diverged"] = str(ledger["diverged"])
    return rec


# ------------------------------------------------------------------------------ markdown
_CLS_COLS = (("accuracy", "accuracy", 100.0), ("ece", "ECE", 1.0), ("pooled_ece", "pooled ECE", 1.0),
             ("nll", "NLL", 1.0), ("brier", "Brier", 1.0), ("aurc", "AURC", 1.0))  # fmt: skip
_REG_COLS = (("mse", "MSE", 1.0), ("nll", "NLL", 1.0), ("crps", "CRPS", 1.0), ("pit_error", "PIT error", 1.0),
             ("coverage_90", "90% coverage", 1.0), ("kl", "KL to exact", 1.0), ("w2", "W2 to exact", 1.0))  # fmt: skip


def _fmt(x: float, scale: float) -> str:
    v = x * scale
    return f"{v:.1f}" if scale == 100.0 else (f"{v:.3g}" if abs(v) < 100 else f"{v:.1f}")


def markdown_table(records: list[dict[str, Any]]) -> str:
    """A Markdown table of one suite's records: means with 95% CIs, steps and CPU seconds."""
    if not records:
        return "(no finished method)\n"
    kind = records[0].get("kind", "classification")
    cols = [
        c
        for c in (_CLS_COLS if kind == "classification" else _REG_COLS)
        if any(c[0] in r for r in records)
    ]
    head = "| method | " + " | ".join(c[1] for c in cols) + " | steps | CPU s |"
    lines = [head, "|" + "---|" * (len(cols) + 3)]
    for r in records:
        cells = []
        for key, _, scale in cols:
            if r.get(key) is None:
                cells.append("–")
                continue
            ci = r.get(f"{key}_ci")
            cell = _fmt(r[key], scale)
            if ci is not None and key in ("accuracy", "mse", "ece", "nll", "w2"):
                cell += f" [{_fmt(ci[0], scale)}, {_fmt(ci[1], scale)}]"
            cells.append(cell)
        name = r["method"]
        if r.get("stopped") == "diverged":
            name += " (diverged)"
        elif r.get("error"):
            name += " (evaluation failed)"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {r['steps']} | {r['cpu_s']:.0f} |")
    for r in records:  # what happened, under the table: a dash or a flagged number needs its reason
        if r.get("stopped") == "diverged":
            where = (
                "evaluated at its best validated checkpoint before that"
                if r.get("episode_fingerprint") is not None
                else "no checkpoint was validated before it, so nothing was evaluated"
            )
            lines.append(f"\n`{r['method']}`: training diverged at about step {r['steps']} "
                         f"({r.get('diverged', '')}); {where}.")  # fmt: skip
        elif r.get("error"):
            lines.append(f"\n`{r['method']}`: {r['error']}")
    return "\n".join(lines) + "\n"


def _span(records: list[dict[str, Any]]) -> str:
    dates = sorted(str(r["date"]) for r in records if r.get("date"))
    if not dates:
        return "at unknown times"
    return f"on {dates[0]}" if dates[0] == dates[-1] else f"from {dates[0]} to {dates[-1]}"


def _block(meta: dict[str, Any], records: list[dict[str, Any]]) -> str:
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    pending = (
        f" Not finished in this run: {', '.join(meta['pending'])}." if meta.get("pending") else ""
    )
    return (
        f"### `{meta['suite']}`: {meta['description']}\n\n"
        f"Generated by `bayesmeta benchmark` on {date} from records measured {_span(records)}; "
        f"machine: {meta['machine']}. "
        f"Command: `{meta.get('command') or 'bayesmeta benchmark ' + meta['suite']}`. "
        f"Budget: {meta['budget_s']:g} CPU seconds of meta-training per method (cap {meta['max_steps']} steps); "
        f"{meta['n_episodes']} test tasks, the same for every method (means over tasks, 95% bootstrap CIs)."
        f"{pending}\n\n{markdown_table(records)}"
    )


def update_docs(path: str | Path, meta: dict[str, Any], records: list[dict[str, Any]]) -> Path:
    """Regenerate the suite's marked block in a Markdown file (appended if absent)."""
    p = Path(path)
    text = p.read_text(encoding="utf-8") if p.is_file() else ""
    start, end = (
        f"<!-- bayesmeta-benchmark:{meta['suite']}:start -->",
        f"<!-- bayesmeta-benchmark:{meta['suite']}:end -->",
    )
    block = f"{start}\n{_block(meta, records)}{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1]
        text = before + block + after
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"
    atomic_write_text(text, p)
    return p


# ------------------------------------------------------------------------------ files
def _suite_order(rec: dict[str, Any]) -> tuple[int, int]:
    names = list(SUITES)
    si = names.index(rec["suite"]) if rec["suite"] in names else len(names)
    labels = SUITES[rec["suite"]].method_labels if rec["suite"] in SUITES else ()
    mi = labels.index(rec["method"]) if rec["method"] in labels else len(labels)
    return si, mi


def write_results(
    out_dir: str | Path,
    meta: dict[str, Any],
    records: list[dict[str, Any]],
    *,
    docs: str | Path | None = None,
) -> Path:
    """Write ``<suite>.json``, merge classification records into ``uncertainty.json``, update docs.

    Raises:
        DataError: an existing ``uncertainty.json`` that is not a list of records.
    """
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    meta = {
        **meta,
        "machine": machine_description(),
        "written": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    path = d / f"{meta['suite']}.json"
    atomic_write_text(json.dumps({"meta": meta, "records": records}, indent=2) + "\n", path)
    if meta["kind"] == "classification":
        upath = d / "uncertainty.json"
        old: list[dict[str, Any]] = []
        if upath.is_file():
            try:
                old = json.loads(upath.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise DataError(
                    f"{upath}: expected a JSON list of records, got a parse error: {e.msg}"
                ) from None
            if not isinstance(old, list) or not all(
                isinstance(r, dict) and "suite" in r for r in old
            ):
                raise DataError(f"{upath}: expected a JSON list of records with a 'suite' key")
        merged = [r for r in old if r["suite"] != meta["suite"]] + list(records)
        merged.sort(key=_suite_order)
        atomic_write_text(json.dumps(merged, indent=2) + "\n", upath)
    if docs is not None:
        update_docs(docs, meta, records)
    return path
