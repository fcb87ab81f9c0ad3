"""The ``bayesmeta`` command: ``train``, ``evaluate``, ``report``, ``study``, ``benchmark`` and ``demo``.

Also ``python -m bayesmeta``. Errors the user can fix print one line,
``bayesmeta: error: <what>``, on stderr and exit with status 2, never a traceback: the
library's own :class:`~bayesmeta.exceptions.BayesMetaError`, a file-system error (a path that is
a file, a folder without permission...) and a bad command line alike. Warnings (a diverging loss,
a log line dropped on resume) are printed once each as ``bayesmeta: warning: <what>``.

Under ``torchrun`` (``torchrun --standalone --nproc_per_node=N -m bayesmeta train ...``),
``train`` and ``evaluate`` join the process group (:mod:`bayesmeta.distributed`): rank 0 prints
and writes; an error that is the same on every process (a bad config, a NaN loss) is reported
by rank 0 alone, a process that loses its peers reports it itself.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TextIO

from bayesmeta.exceptions import BayesMetaError, ConfigError, DistributedError

if TYPE_CHECKING:  # torch is imported only by the commands that need it
    from bayesmeta.distributed.context import DistContext

__all__ = ["main"]

EXIT_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (the usage is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"bayesmeta: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return value


def _add_placement(p: argparse.ArgumentParser, default_from: str) -> None:
    p.add_argument(
        "--device",
        default=None,
        metavar="DEVICE",
        help=f"cpu, cuda, cuda:N or mps (default: {default_from} training.device); "
        "a device this machine lacks is an error",
    )
    p.add_argument(
        "--dtype",
        default=None,
        choices=("float32", "float64"),
        help=f"floating-point precision of the learner and data (default: {default_from} training.dtype)",
    )


def _parser() -> argparse.ArgumentParser:
    from bayesmeta import __version__

    p = _Parser(prog="bayesmeta", description="Bayesian meta-learning: train, evaluate, report.")
    p.add_argument("--version", action="version", version=f"bayesmeta {__version__}", help="print the version and exit")
    sub = p.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser,
        help="train, evaluate, report, study, benchmark or demo; `bayesmeta COMMAND --help` for its options",
    )

    t = sub.add_parser(
        "train",
        help="meta-train a YAML config into a run directory (resumes if it exists)",
        description="Meta-train a YAML config into a run directory. An existing run directory of "
        "the same config is resumed from its last checkpoint.",
    )
    t.add_argument("config", type=Path, help="YAML config (see examples/configs/)")
    t.add_argument("--run-dir", type=Path, required=True, help="run directory to create or resume")
    t.add_argument(
        "--steps", type=_positive_int, default=None,
        help="override training.steps (total steps; above a resumed run's step to train it further)",
    )
    t.add_argument("--seed", type=_seed, default=None, help="override training.seed (a new run only)")
    t.add_argument(
        "--max-minutes", type=_positive_float, default=None,
        help="wall-clock budget of this call: validate, checkpoint and stop when it runs out (default: training.max_minutes)",
    )
    t.add_argument(
        "--max-cpu-seconds", type=_positive_float, default=None, metavar="SECONDS",
        help="CPU-time budget of this call (this process's user + system time), handled like --max-minutes; "
        "what `bayesmeta benchmark` gives each method (default: none)",
    )
    _add_placement(t, "the config's")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")

    e = sub.add_parser(
        "evaluate",
        help="evaluate a trained run on its fixed test episodes",
        description="Evaluate a trained run on its fixed test episodes (evaluation.seed) and write "
        "RUN_DIR/eval/: summary.json, per_task.jsonl and predictions.pt.",
    )
    e.add_argument("run_dir", type=Path, help="a run directory written by `bayesmeta train`")
    e.add_argument(
        "--checkpoint", choices=("best", "last"), default="best",
        help="best: the validation-best checkpoint (falls back to last); last: the latest (default: best)",
    )
    e.add_argument("--episodes", type=_positive_int, default=None, help="override evaluation.n_episodes")
    e.add_argument(
        "--max-tasks-per-call", type=_positive_int, default=1, metavar="N",
        help="tasks per learner call: bounds peak memory, never changes the per-task results (default: 1)",
    )
    _add_placement(e, "the run's")
    e.add_argument("--no-progress", action="store_true", help="no progress bar (the summary line is also left out)")
    e.add_argument(
        "--calibrate", choices=("temperature", "conformal"), default=None,
        help="also fit this calibrator on the run's validation episodes and save calibrated metrics beside the raw ones",
    )
    e.add_argument("--alpha", type=float, default=0.1, help="conformal miscoverage level (with --calibrate conformal; default 0.1)")
    e.add_argument(
        "--score", default=None,
        help="conformal score: lac, aps, raps (classification); normalized, absolute, cqr (regression)",
    )

    r = sub.add_parser(
        "report",
        help="HTML/Markdown/JSON calibration report of evaluated runs",
        description="Compare evaluated runs in one report. Runs are compared only within groups "
        "evaluated on identical episodes; each run's protocol is listed.",
    )
    r.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR", help="evaluated run directories (duplicates are ignored)")
    r.add_argument("--out", type=Path, default=None, help="output folder (default: RUN_DIR/report of the first run)")

    s = sub.add_parser(
        "study",
        help="medical risk study: train each method, evaluate every dataset, one report",
        description="Medical risk study: train each method, evaluate every dataset, one report.",
    )
    s.add_argument("config", type=Path, help="study YAML (see examples/configs/medical/)")
    s.add_argument("--out", type=Path, default=None, help="output folder (default: runs/study/<config name>)")
    s.add_argument("--steps", type=_positive_int, default=None, help="override training.steps of every method")
    s.add_argument("--episodes", type=_positive_int, default=None, help="override evaluation.n_episodes")
    s.add_argument("--method", action="append", default=None, help="only this method label (repeatable)")
    s.add_argument("--train-only", action="store_true", help="train, do not evaluate or report")
    s.add_argument("--no-progress", action="store_true", help="no progress bars")

    _add_benchmark(sub)

    d = sub.add_parser(
        "demo",
        help="MAML on sinusoids and ProtoNets on Omniglot 5-way 1-shot, end to end",
        description="Train, evaluate and report MAML on sinusoids and ProtoNets on Omniglot 5-way 1-shot.",
    )
    d.add_argument("--out", type=Path, default=Path("runs/demo"), help="where the demo's run directories go (default: runs/demo)")
    d.add_argument("--smoke", action="store_true", help="shrink everything to seconds (for CI)")
    d.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
    return value


def _add_benchmark(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    b = sub.add_parser(
        "benchmark",
        help="uncertainty benchmark: every learner of a suite on the same episodes, per-method CPU budgets",
        description="Run fixed benchmark suites: every learner (including temperature-scaled ProtoNets, "
        "protonet+ts, and an ensemble) meta-trained under a per-method CPU budget and evaluated on the same "
        "test episodes; resumable (re-running skips finished methods and continues partial ones). Writes "
        "RESULTS_DIR/<suite>.json (and uncertainty.json for classification suites), an HTML report under "
        "RUN_DIR/<suite>/report/, and regenerates the suite's table in the docs file.",
    )
    b.add_argument("suites", nargs="*", metavar="SUITE", help="suite names (see --list)")
    b.add_argument("--list", action="store_true", help="list the suites and their methods, and exit")
    b.add_argument("--run-dir", type=Path, default=Path("runs/benchmark"), help="where the runs go (default: runs/benchmark)")
    b.add_argument("--method", action="append", default=None, help="only this method label (repeatable)")
    b.add_argument("--budget", type=_positive_float, default=None, metavar="SECONDS",
                   help="CPU seconds of meta-training per method (default: the suite's)")
    b.add_argument("--max-steps", type=_positive_int, default=None, help="meta-steps cap per method (default: the suite's)")
    b.add_argument("--episodes", type=_positive_int, default=None, help="test tasks (default: the suite's)")
    b.add_argument("--max-minutes", type=_positive_float, default=None,
                   help="stop this call after this many wall minutes (run again to continue)")
    b.add_argument("--results-dir", type=Path, default=None,
                   help="where <suite>.json goes (default: benchmarks/results; RUN_DIR/<suite>/results with --smoke)")
    b.add_argument("--docs", type=Path, default=None,
                   help="Markdown file whose suite table is regenerated (default: docs/benchmarks.md if it exists; none with --smoke)")
    b.add_argument("--no-docs", action="store_true", help="do not touch any docs file")
    b.add_argument("--threads", type=_positive_int, default=1, help="torch threads (default: 1)")
    b.add_argument("--smoke", action="store_true", help="shrink every suite to seconds (tests, CI; numbers mean nothing)")
    b.add_argument("--no-report", action="store_true", help="no HTML report or figures")
    b.add_argument("--no-progress", action="store_true", help="no progress bars")


def _benchmark(args: argparse.Namespace, argv: Sequence[str] | None) -> None:
    from bayesmeta.benchmark import SUITES, get_suite, run_benchmark
    from bayesmeta.exceptions import ConfigError

    if args.list:
        for name, suite in SUITES.items():
            print(f"{name}: {suite.description}\n    methods: {', '.join(suite.method_labels)}")
        return
    if not args.suites:
        raise ConfigError(f"suite: give at least one suite name; valid suites are: {', '.join(SUITES)}")
    for name in args.suites:
        get_suite(name)  # every name checked before anything runs
    docs = None
    if not args.no_docs:
        docs = args.docs if args.docs is not None else (None if args.smoke or not Path("docs/benchmarks.md").is_file()
                                                        else Path("docs/benchmarks.md"))
    argv_list = list(sys.argv[1:] if argv is None else argv)
    command = "bayesmeta " + " ".join(argv_list)
    for name in args.suites:
        res = run_benchmark(
            name, args.run_dir, methods=args.method, budget_s=args.budget, max_steps=args.max_steps,
            n_episodes=args.episodes, smoke=args.smoke, max_minutes=args.max_minutes, results_dir=args.results_dir,
            docs=docs, command=command, threads=args.threads, report=not args.no_report, progress=not args.no_progress,
        )
        for o in res.outcomes:
            rec = o.record or {}
            why = f"training diverged: {rec['diverged']}" if rec.get("diverged") else rec.get("error")
            print(f"{name}: {o.label}: {o.status}" + (f" ({why})" if why else ""))
        if res.results_path is not None:
            print(f"{name}: results in {res.results_path}" + (f", report {res.report}" if res.report else ""))
        if not res.complete:
            print(f"{name}: not finished (wall-time limit); run the same command again to continue")


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _distributed(args: argparse.Namespace) -> DistContext | None:
    """Join the process group when started by torchrun (``train`` and ``evaluate`` only)."""
    if not all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")):
        return None  # not started by torchrun (the check of distributed.launched, without importing torch)
    if args.command not in ("train", "evaluate"):
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError(
                f"{args.command}: only train and evaluate run on several processes; run "
                f"`bayesmeta {args.command}` without torchrun"
            )
        return None
    device = args.device
    if device is None:
        from bayesmeta.config import load_config
        from bayesmeta.runs import load_run_config

        cfg = load_config(args.config) if args.command == "train" else load_run_config(args.run_dir)
        device = cfg["training"]["device"]
    from bayesmeta.distributed import init_distributed

    return init_distributed(device)


def _run(args: argparse.Namespace, ctx: DistContext | None, argv: Sequence[str] | None = None) -> None:
    main_rank = ctx is None or ctx.is_main
    if args.command == "benchmark":
        _benchmark(args, argv)
    elif args.command == "train":
        from bayesmeta.runs import train_run

        res = train_run(
            args.config, args.run_dir, steps=args.steps, seed=args.seed, device=args.device, dtype=args.dtype,
            progress=not args.no_progress, distributed=ctx, max_minutes=args.max_minutes,
            max_cpu_seconds=args.max_cpu_seconds,
        )
        if not main_rank:
            return
        if res.steps == res.resumed_from and res.resumed_from > 0:
            print(f"{args.run_dir} is already trained to step {res.steps}; nothing to do (give --steps > {res.steps} to train further)")
            return
        best = "" if res.best_val is None else f", best validation score {res.best_val:.4g} at step {res.best_step}"
        start = f" (resumed at step {res.resumed_from})" if res.resumed_from else ""
        print(f"trained to step {res.steps}{start} into {args.run_dir}{best}")
        if res.steps < res.target_steps:
            print(f"stopped by the time budget before step {res.target_steps}; the same command resumes from step {res.steps}")
    elif args.command == "evaluate":
        from bayesmeta._memory import fix_mmap_threshold
        from bayesmeta.runs import evaluate_run

        fix_mmap_threshold()  # large activations go back to the OS: peak RSS stays flat over episodes

        result = evaluate_run(
            args.run_dir, checkpoint=args.checkpoint, n_episodes=args.episodes, device=args.device, dtype=args.dtype,
            max_tasks_per_call=args.max_tasks_per_call, progress=not args.no_progress,
            calibrate=args.calibrate, alpha=args.alpha, score=args.score, distributed=ctx,
        )
        if not main_rank:
            return
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


def _show_warning(stream: TextIO) -> Callable[..., None]:
    """A ``warnings.showwarning`` that prints one line per warning, without source lines."""

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: TextIO | None = None, line: str | None = None) -> None:
        print(f"bayesmeta: warning: {_one_line(message)}", file=stream)

    return show


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bayesmeta`` console script; returns the exit status.

    Under torchrun (a process group this command created) the process ends here with
    ``os._exit`` once the group is destroyed and the streams are flushed: see :func:`_leave`.
    """
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # --help, --version, or a bad command line (already printed)
        return int(e.code) if isinstance(e.code, int) else EXIT_ERROR
    ctx: DistContext | None = None
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning(sys.stderr)
        try:
            ctx = _distributed(args)
            _run(args, ctx, argv)
        except BayesMetaError as e:
            if _reports(e, ctx):
                print(f"bayesmeta: error: {_rank_prefix(ctx, e)}{_one_line(e)}", file=sys.stderr)
            return _leave(ctx, EXIT_ERROR, wait=False)
        except OSError as e:  # a path that is a file, no permission, disk full...
            if _reports(e, ctx):
                where = f" {e.filename!r}" if getattr(e, "filename", None) else ""
                print(f"bayesmeta: error:{where} {_one_line(e.strerror or e)}", file=sys.stderr)
            return _leave(ctx, EXIT_ERROR, wait=False)
        except KeyboardInterrupt:
            print("bayesmeta: interrupted; a run resumes from its last checkpoint", file=sys.stderr)
            return _leave(ctx, 130, wait=False)
    return _leave(ctx, 0)


def _leave(ctx: DistContext | None, status: int, *, wait: bool = True) -> int:
    """Tear the process group down and return ``status``; a torchrun worker exits right here.

    Why ``os._exit`` for a worker: gloo's C++ threads can still hold work objects with Python
    references when the interpreter finalizes, and destroying them then aborts the process
    (SIGABRT, "terminate called without an active exception"; pytorch/pytorch PR 179291).
    Seen once in ~30 two-process launches here, after every file had been written, and torchrun
    then reports the whole run as failed. Everything a run writes is closed (atomic writes)
    before this point; only the standard streams need flushing.
    """
    _shutdown(ctx, wait=wait)
    if ctx is not None and ctx.owns_group:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


def _shutdown(ctx: DistContext | None, *, wait: bool = True) -> None:
    if ctx is not None:
        from bayesmeta.distributed.context import shutdown

        shutdown(ctx, wait=wait)


def _rank_prefix(ctx: DistContext | None, error: BaseException) -> str:
    if ctx is None or isinstance(error, DistributedError):  # a DistributedError names its rank
        return ""
    return f"[rank {ctx.rank}/{ctx.world_size}] "


def _reports(error: BaseException, ctx: DistContext | None) -> bool:
    """Whether this process prints ``error``: always in one process; in several, an error that
    every process raises alike (a bad config, a NaN loss, marked by
    :func:`bayesmeta.distributed.mark_shared` or raised by rank 0 for all) is printed by rank 0
    only, and anything else (a lost peer, a failure of this process's own) by the process that met it."""
    if getattr(error, "_bayesmeta_raised_on_rank0", False):  # collectives.FROM_MAIN
        return False
    if ctx is None and os.environ.get("RANK", "0") != "0" and not isinstance(error, DistributedError):
        return False  # an error before the process group existed: the same on every rank
    return True


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
