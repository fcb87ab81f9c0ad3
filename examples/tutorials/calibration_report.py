"""Calibration reporting for a paper: two methods, the same test episodes, one report.

    .venv/bin/python examples/tutorials/calibration_report.py [--steps 200] [--runs runs/tutorials/calibration]
        [--out-dir docs/assets/tutorials] [--smoke]

1. Trains ProtoNets and Matching networks on Omniglot 5-way 1-shot with ``bayesmeta train`` (the
   same config apart from the method, so both are evaluated on identical episodes).
2. Evaluates each with ``bayesmeta evaluate RUN --calibrate temperature``: metrics with 95%
   bootstrap CIs over test tasks, raw and after temperature scaling fitted on validation tasks.
3. Writes one HTML/Markdown/JSON report with ``bayesmeta report`` and draws the reliability
   diagrams of both methods, raw and calibrated (``reliability.png``).

``--smoke``: two steps and a few episodes, seconds.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from bayesmeta import evaluate
from bayesmeta.calibration import TemperatureScaling
from bayesmeta.cli import main as bayesmeta_cli
from bayesmeta.config import build_episodes
from bayesmeta.metrics import reliability_diagram
from bayesmeta.predictive import CategoricalPredictive
from bayesmeta.report.figures import reliability_figure
from bayesmeta.runs import load_learner

FIGURES = Path(__file__).resolve().parents[2] / "docs" / "assets" / "tutorials"

# --8<-- [start:config]
CONFIG = """\
method: {{name: {method}}}
model: {{name: conv4, hidden: {hidden}, norm: task}}
tasks: {{name: omniglot, n_way: 5, k_shot: 1, n_query: 15}}
training: {{steps: {steps}, meta_batch_size: 4, seed: 0, val_episodes: {val}, val_every: 100}}
evaluation: {{n_episodes: {test}, seed: 1234, tasks_per_batch: 20}}
"""
# --8<-- [end:config]


def cli(*argv: str) -> None:
    """Run one ``bayesmeta`` command in this process; stop on a non-zero exit status."""
    status = bayesmeta_cli(list(argv))
    if status != 0:
        raise SystemExit(f"bayesmeta {' '.join(argv)} exited with status {status}")


def results_table(runs: list[Path]) -> str:
    """A Markdown table of each run's raw and temperature-scaled test metrics from ``eval/summary.json``."""
    rows = ["| method | tasks | temperature | accuracy | NLL raw -> calibrated | ECE raw -> calibrated |", "|---|---|---|---|---|---|"]
    for run in runs:
        s = json.loads((run / "eval" / "summary.json").read_text(encoding="utf-8"))
        raw, cal = s["metrics"], s["calibrated"]["metrics"]

        def ci(m: dict) -> str:
            return f"{m['mean']:.3f} [{m['low']:.3f}, {m['high']:.3f}]"

        rows.append(f"| {s['method']} | {s['n_tasks']} | {s['calibrated']['calibrator']['temperature']:.3f} | "
                    f"{ci(raw['accuracy'])} | {ci(raw['nll'])} -> {ci(cal['nll'])} | {ci(raw['ece'])} -> {ci(cal['ece'])} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200, help="meta-steps per method")
    ap.add_argument("--runs", type=Path, default=None,
                    help="run directories go here (default: runs/tutorials/calibration; with --smoke a temporary folder)")
    ap.add_argument("--out-dir", type=Path, default=None,
                    help="where the figures go (default: docs/assets/tutorials; with --smoke a temporary folder)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, seconds (CI)")
    args = ap.parse_args(argv)
    args.runs = args.runs or (Path(tempfile.mkdtemp(prefix="bayesmeta-smoke-")) if args.smoke else Path("runs/tutorials/calibration"))
    args.out_dir = args.out_dir or (Path(tempfile.mkdtemp(prefix="bayesmeta-smoke-")) if args.smoke else FIGURES)
    sizes = {"steps": 2, "val": 10, "test": 10, "hidden": 8} if args.smoke else {"steps": args.steps, "val": 100, "test": 300, "hidden": 32}
    quiet = ["--no-progress"] if args.smoke else []
    args.runs.mkdir(parents=True, exist_ok=True)
    args.out_dir.mkdir(parents=True, exist_ok=True)

    runs = []
    for method in ("protonet", "matching"):
        config = args.runs / f"{method}.yaml"
        config.write_text(CONFIG.format(method=method, **sizes), encoding="utf-8")
        run = args.runs / method
        # --8<-- [start:commands]
        cli("train", str(config), "--run-dir", str(run), *quiet)
        cli("evaluate", str(run), "--calibrate", "temperature", *quiet)
        # --8<-- [end:commands]
        runs.append(run)
    cli("report", *map(str, runs), "--out", str(args.runs / "report"))

    # The same numbers by hand, in Python, for the figure: raw and temperature-scaled predictives.
    diagrams = []
    for run in runs:
        # --8<-- [start:by_hand]
        learner, cfg = load_learner(run)
        test = build_episodes(cfg, "test")
        val = build_episodes(cfg, "val", evaluation_tasks=True)      # disjoint from the test tasks
        raw, fit_on = (evaluate(learner, eps, progress=False).predictions for eps in (test, val))
        pred = CategoricalPredictive(logits=raw["sample_log_probs"])                  # [M, T, Q, C]
        scaling = TemperatureScaling.fit(CategoricalPredictive(logits=fit_on["sample_log_probs"]), fit_on["targets"])
        before = reliability_diagram(pred, raw["targets"], n_bins=15)
        after = reliability_diagram(scaling(pred), raw["targets"], n_bins=15)
        # --8<-- [end:by_hand]
        name = cfg["method"]["name"]
        print(f"{name}: temperature {float(scaling.temperature):.3f}, ECE {before.ece:.4f} -> {after.ece:.4f}")
        diagrams += [(f"{name}, raw", before), (f"{name}, temperature-scaled", after)]
    (args.out_dir / "reliability.txt").write_text(results_table(runs), encoding="utf-8")
    fig = reliability_figure(diagrams, max_cols=2)
    fig.savefig(args.out_dir / "reliability.png", dpi=70)
    assert torch.isfinite(torch.tensor([d.ece for _, d in diagrams])).all()
    print(f"report: {args.runs / 'report' / 'report.html'}")


if __name__ == "__main__":
    main()
