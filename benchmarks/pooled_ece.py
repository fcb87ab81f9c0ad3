"""Pooled ECE of evaluated runs: every query of every test task in one 15-bin reliability table.

    .venv/bin/python benchmarks/pooled_ece.py runs/versa_gn/eval runs/dkt_gn/eval

``bayesmeta evaluate`` reports the per-task mean ECE (each task's 75 queries binned alone, which
carries a small-sample bias that falls with accuracy); the benchmark suites also record the
pooled ECE. This prints the latter for runs trained with ``bayesmeta train`` and evaluated with
``bayesmeta evaluate``, from their ``eval/predictions.pt``, through the very function that fills the
suites' ``pooled_ece`` records, so the two are comparable. Prints one JSON object
``{eval_dir: {"pooled_ece": float, "n_tasks": int}}``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bayesmeta.benchmark import pooled_ece
from bayesmeta.io import safe_torch_load


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("eval_dirs", nargs="+", type=Path, help="folders holding predictions.pt (a run's eval/)")
    args = ap.parse_args()
    out = {}
    for d in args.eval_dirs:
        predictions = safe_torch_load(d / "predictions.pt")  # plain tensors only, nothing unpickled
        value = pooled_ece(predictions)
        out[str(d)] = {"pooled_ece": value, "n_tasks": int(predictions["targets"].shape[0])}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
