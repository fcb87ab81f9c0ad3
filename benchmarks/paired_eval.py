"""Paired comparison of two evaluated runs on the same test tasks (paired bootstrap over tasks).

    .venv/bin/python benchmarks/paired_eval.py runs/versa/eval runs/protonet/eval
    .venv/bin/python benchmarks/paired_eval.py runs/versa/eval runs/protonet/eval:calibrated

Each argument is a folder written by ``bayesmeta evaluate`` (``summary.json`` and
``per_task.jsonl``); the suffix ``:calibrated`` takes that run's calibrated per-task metrics
(``calibrated_per_task.jsonl``, written with ``--calibrate``) instead of its raw ones. The two
must have been evaluated on identical episodes (equal episode fingerprints; refused otherwise).
Prints one JSON object: per metric, A's and B's means and
:func:`bayesmeta.report.paired.paired_bootstrap`'s difference ``A - B`` with its 95% interval and
two-sided p-value. The benchmark docs use it to say whether a per-task ECE gap is more than noise.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bayesmeta.exceptions import BayesMetaError, ConfigError
from bayesmeta.report.paired import paired_bootstrap

METRICS = ("accuracy", "ece", "nll", "brier")


def load_per_task(spec: str) -> tuple[str, dict[str, np.ndarray]]:
    """``(episode fingerprint, {metric: [T] values})`` of ``EVAL_DIR`` or ``EVAL_DIR:calibrated``."""
    folder, _, variant = spec.partition(":")
    if variant not in ("", "calibrated"):
        raise ConfigError(f"{spec}: expected EVAL_DIR or EVAL_DIR:calibrated, got the suffix {variant!r}")
    d = Path(folder)
    name = "calibrated_per_task.jsonl" if variant else "per_task.jsonl"
    if not (d / "summary.json").is_file():
        raise ConfigError(f"{spec}: expected an evaluation folder holding summary.json and {name}")
    summary = json.loads((d / "summary.json").read_text())
    if variant and "calibrated" not in summary:
        raise ConfigError(f"{spec}: its summary.json has no calibrated section (evaluated without --calibrate)")
    if not (d / name).is_file():
        raise ConfigError(f"{spec}: expected an evaluation folder holding summary.json and {name}")
    fingerprint = summary["episode_fingerprint"]
    rows = [json.loads(line) for line in (d / name).read_text().splitlines() if line.strip()]
    return fingerprint, {m: np.array([float(r[m]) for r in rows]) for m in METRICS if rows and m in rows[0]}


def compare(a: str, b: str) -> dict[str, dict[str, float | int]]:
    """Paired bootstrap of ``a - b`` for every metric both carry."""
    fa, va = load_per_task(a)
    fb, vb = load_per_task(b)
    if fa != fb:
        raise ConfigError(f"{a} and {b} were evaluated on different episodes (fingerprints {fa[:8]} and {fb[:8]})")
    out: dict[str, dict[str, float | int]] = {}
    for m in METRICS:
        if m in va and m in vb:
            test = paired_bootstrap(va[m], vb[m])
            out[m] = {"a": float(va[m].mean()), "b": float(vb[m].mean()), **test.to_dict()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", help="EVAL_DIR or EVAL_DIR:calibrated")
    ap.add_argument("b", help="EVAL_DIR or EVAL_DIR:calibrated")
    args = ap.parse_args()
    try:
        result = compare(args.a, args.b)
    except BayesMetaError as e:
        raise SystemExit(f"paired_eval: {e}") from None
    print(json.dumps({"a": args.a, "b": args.b, "a_minus_b": result}, indent=2))


if __name__ == "__main__":
    main()
