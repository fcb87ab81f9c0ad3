"""The ``bayesmeta`` command: ``train``, ``evaluate``, ``report`` and ``demo``.

Errors of the library (:class:`~bayesmeta.exceptions.BayesMetaError`) are printed as one line on
stderr with exit status 2, without a traceback: they are the user's to fix, not bugs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bayesmeta.exceptions import BayesMetaError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bayesmeta", description="Bayesian meta-learning: train, evaluate, report.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="meta-train a YAML config into a run directory (resumes if it exists)")
    t.add_argument("config", type=Path, help="YAML config (see examples/configs/)")
    t.add_argument("--run-dir", type=Path, required=True, help="run directory to create or resume")
    t.add_argument("--steps", type=int, default=None, help="override training.steps")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")

    e = sub.add_parser("evaluate", help="evaluate a trained run on its fixed test episodes")
    e.add_argument("run_dir", type=Path)
    e.add_argument("--checkpoint", choices=("best", "last"), default="best")
    e.add_argument("--episodes", type=int, default=None, help="override evaluation.n_episodes")
    e.add_argument("--no-progress", action="store_true")
    e.add_argument("--calibrate", choices=("temperature", "conformal"), default=None,
                   help="also fit this calibrator on the run's validation episodes and save calibrated metrics beside the raw ones")
    e.add_argument("--alpha", type=float, default=0.1, help="conformal miscoverage level (with --calibrate conformal)")
    e.add_argument("--score", default=None, help="conformal score: lac, aps, raps (classification); normalized, absolute, cqr (regression)")

    r = sub.add_parser("report", help="HTML/Markdown/JSON calibration report of evaluated runs")
    r.add_argument("run_dirs", type=Path, nargs="+")
    r.add_argument("--out", type=Path, default=None, help="output folder (default: RUN_DIR/report of the first run)")

    s = sub.add_parser("study", help="medical risk study: train each method, evaluate every dataset, one report")
    s.add_argument("config", type=Path, help="study YAML (see examples/configs/medical/)")
    s.add_argument("--out", type=Path, default=None, help="output folder (default: runs/study/<config name>)")
    s.add_argument("--steps", type=int, default=None, help="override training.steps of every method")
    s.add_argument("--episodes", type=int, default=None, help="override evaluation.n_episodes")
    s.add_argument("--method", action="append", default=None, help="only this method label (repeatable)")
    s.add_argument("--train-only", action="store_true", help="train, do not evaluate or report")
    s.add_argument("--no-progress", action="store_true")

    d = sub.add_parser("demo", help="MAML on sinusoids and ProtoNets on Omniglot 5-way 1-shot, end to end")
    d.add_argument("--out", type=Path, default=Path("runs/demo"), help="where the demo's run directories go")
    d.add_argument("--smoke", action="store_true", help="shrink everything to seconds (for CI)")
    d.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bayesmeta`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "train":
            from bayesmeta.runs import train_run

            res = train_run(args.config, args.run_dir, steps=args.steps, progress=not args.no_progress)
            best = "" if res.best_val is None else f", best validation score {res.best_val:.4g} at step {res.best_step}"
            print(f"trained {res.steps} steps into {args.run_dir}{best}")
        elif args.command == "evaluate":
            from bayesmeta.runs import evaluate_run

            result = evaluate_run(
                args.run_dir, checkpoint=args.checkpoint, n_episodes=args.episodes, progress=not args.no_progress,
                calibrate=args.calibrate, alpha=args.alpha, score=args.score,
            )
            print(result.table())
            if result.calibrated is not None:
                print(f"calibrator fitted on {result.calibrated.n_calibration_tasks} validation tasks: {result.calibrated.calibrator}")
            print(f"per-task results in {args.run_dir / 'eval'}")
        elif args.command == "report":
            from bayesmeta.report import build_report

            out = args.out or (args.run_dirs[0] / "report")
            print(f"report written to {build_report(list(args.run_dirs), out)}")
        elif args.command == "study":
            from bayesmeta.study import run_study

            out = args.out or Path("runs/study") / args.config.stem
            res = run_study(
                args.config, out, steps=args.steps, n_episodes=args.episodes, progress=not args.no_progress,
                methods=args.method, evaluate_methods=not args.train_only,
            )
            print(f"study trained into {out}" if args.train_only else f"study report written to {res.report}")
        elif args.command == "demo":
            from bayesmeta.demo import run_demo

            run_demo(args.out, smoke=args.smoke, progress=not args.no_progress)
    except BayesMetaError as e:
        print(f"bayesmeta: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
