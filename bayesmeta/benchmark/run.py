"""Run a suite: train every method under its CPU budget, evaluate all on the same episodes, write results.

Layout of ``RUN_DIR/<suite>/``::

    suite.json                    the suite's settings (a different suite in the same folder is refused)
    <method>/                     an ordinary run directory (config.yaml, checkpoints/, metrics.jsonl)
    <method>/benchmark.json       CPU seconds and steps of meta-training so far (the budget's ledger)
    <method>/eval/                summary.json, per_task.jsonl, predictions.pt on the suite's test episodes
    <method>/record.json          the method's finished record (the marker that it is done)
    report/report.html            ``bayesmeta.report`` over every finished method (reliability diagrams,
                                  PIT histograms, paired comparisons), plus PNG figures
    results/ (smoke runs only)    the suite JSON when no results folder is given

**Budgets.** Each method gets ``budget_s`` seconds of CPU time (``time.process_time``: user +
system time of this process, all threads) for meta-training, counted across calls in
``benchmark.json``; the trainer stops at the first step past it, validates and checkpoints
(:class:`~bayesmeta.training.MetaTrainer` ``max_cpu_seconds``), and ``max_steps`` caps the steps.
Evaluation is not counted. Torch runs at ``threads`` threads (default 1).

**Resuming.** A method whose ``record.json`` matches the current settings (budget, steps cap,
episodes) is skipped; a method with a checkpoint continues from it with what is left of its
budget; ``max_minutes`` stops *this call* after that much wall time (the current method
checkpoints), so a suite can be run in pieces. Nothing is lost by interrupting a call.

**Same episodes.** The test episodes are drawn from one seeded generator
(:func:`bayesmeta.tasks.iter_episodes`) for every method; every record carries the episode
fingerprint, and a suite's records are written only if all fingerprints agree.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from bayesmeta.benchmark.records import failed_record, make_record, write_results
from bayesmeta.benchmark.suites import MethodEntry, Suite, get_suite, select_methods, smoke_suite
from bayesmeta.config import TASKS, build_task_source, resolve_config
from bayesmeta.evaluation import EvaluationResult, evaluate
from bayesmeta.exceptions import ConfigError, DataError, NumericalError
from bayesmeta.io import atomic_write_text
from bayesmeta.metrics import mean_ci
from bayesmeta.tasks import fixed_episodes, iter_episodes
from bayesmeta.tasks.batch import TaskBatch
from bayesmeta.tasks.episodes import TaskSource

__all__ = ["BenchmarkResult", "MethodOutcome", "run_benchmark", "suite_configs", "episode_source"]

_CAL_SEED_OFFSET = (
    2_000_003  # calibration episodes: neither the test (seed) nor the validation seed
)


@dataclass
class MethodOutcome:
    """What happened to one method in a call.

    Attributes:
        label: the method label.
        status: ``"done"`` (record written or already there), ``"skipped"`` (already done with
            these settings), or ``"partial"`` (this call's wall-time limit stopped it).
        record: the method's record when done.
    """

    label: str
    status: str
    record: dict[str, Any] | None = None


@dataclass
class BenchmarkResult:
    """A suite's outcome after one call.

    Attributes:
        suite: the suite's name.
        outcomes: one per selected method, in table order.
        records: the finished records of the selected methods (what the JSON holds).
        results_path: ``<results_dir>/<suite>.json`` when written.
        report: the HTML report when written.
        complete: every selected method finished.
    """

    suite: str
    outcomes: list[MethodOutcome] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    results_path: Path | None = None
    report: Path | None = None
    complete: bool = False


# ------------------------------------------------------------------------------ configs
def _config(suite: Suite, entry: MethodEntry, max_steps: int) -> dict[str, Any]:
    training = {**suite.training, **entry.training, "steps": int(max_steps), "seed": 0,
                "val_episodes": suite.val_episodes}  # fmt: skip
    evaluation = {
        "n_episodes": suite.n_episodes,
        "seed": suite.seed,
        "tasks_per_batch": suite.tasks_per_batch,
    }
    if suite.test_tasks is None:
        # a method trained on other task options (ProtoNets 60-way) is tested on the suite's
        extra = sorted(set(entry.tasks) - set(suite.tasks))
        if extra:
            raise ConfigError(
                f"suite {suite.name}, method {entry.label}: tasks overrides {extra} are not options of the "
                f"suite's tasks ({', '.join(suite.tasks)}), so its test episodes would differ"
            )
        evaluation["tasks"] = {**{k: suite.tasks[k] for k in entry.tasks}, **suite.test_overrides}
    return {
        "method": copy_dict(entry.method),
        "model": copy_dict(entry.model),
        "tasks": {**suite.tasks, **entry.tasks},
        "training": training,
        "evaluation": evaluation,
    }


def copy_dict(d: dict[str, Any]) -> dict[str, Any]:
    """A deep copy through JSON (configs hold plain values only)."""
    return json.loads(json.dumps(d))


def suite_configs(
    suite: Suite, entries: Sequence[MethodEntry], max_steps: int
) -> dict[str, dict[str, Any]]:
    """The resolved run config of every trained method (derived methods are not trained).

    Raises:
        ConfigError: a method whose config does not resolve, named with its suite and label.
    """
    out = {}
    for e in entries:
        if e.derived_from is not None:
            continue
        try:
            out[e.label] = resolve_config(_config(suite, e, max_steps))
        except ConfigError as err:
            raise ConfigError(f"suite {suite.name}, method {e.label}: {err}") from None
    return out


def episode_source(suite: Suite, cfg: dict[str, Any], split: str = "test") -> TaskSource:
    """The test (or, with ``split="val"``, calibration) task source of a suite."""
    if suite.test_tasks is None:
        return build_task_source(cfg, split, evaluation=True)
    opts = dict(suite.test_tasks)
    name = opts.pop("name")
    return TASKS[name].build(opts, split)


def _settings(suite: Suite) -> dict[str, Any]:
    """What makes two runs of a suite comparable (budgets and steps may change between calls)."""
    d = asdict(suite)
    for k in ("budget_s", "max_steps", "description", "smoke", "methods"):
        d.pop(k)
    return d


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _check_suite_dir(suite_dir: Path, suite: Suite, smoke: bool) -> None:
    info = {
        "suite": suite.name,
        "smoke": smoke,
        "settings_sha256": _digest(_settings(suite)),
        "settings": _settings(suite),
    }
    path = suite_dir / "suite.json"
    old = _read_json(path) if path.is_file() else None
    if isinstance(old, dict) and old.get("settings_sha256") != info["settings_sha256"]:
        raise ConfigError(
            f"run_dir: {str(suite_dir)!r} holds suite {old.get('suite')!r} with other settings "
            f"(smoke={old.get('smoke')}); use another --run-dir"
        )
    suite_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(info, indent=2, default=str) + "\n", path)


# ------------------------------------------------------------------------------ training
def _ledger(train_dir: Path) -> dict[str, Any]:
    led = _read_json(train_dir / "benchmark.json")
    return led if isinstance(led, dict) else {"cpu_s": 0.0, "steps": 0}


def _training_done(led: dict[str, Any], budget_s: float, max_steps: int) -> str | None:
    """Why training is over (``"diverged"``/``"budget"``/``"steps"``), or None."""
    if led.get("diverged"):
        return "diverged"
    if int(led.get("steps", 0)) >= max_steps:
        return "steps"
    if float(led.get("cpu_s", 0.0)) >= budget_s:
        return "budget"
    return None


def _train(
    cfg: dict[str, Any],
    train_dir: Path,
    budget_s: float,
    max_steps: int,
    deadline: float | None,
    progress: bool,
) -> tuple[dict[str, Any], str | None]:
    """Train within what is left of the budget; returns the ledger and why training is over (None: not yet)."""
    from bayesmeta.runs import train_run

    led = _ledger(train_dir)
    done = _training_done(led, budget_s, max_steps)
    if done is not None:
        return led, done
    if deadline is not None and time.monotonic() >= deadline:
        return led, None
    remaining = budget_s - float(led.get("cpu_s", 0.0))
    minutes = None if deadline is None else max((deadline - time.monotonic()) / 60.0, 1e-3)
    start = time.process_time()
    try:
        res = train_run(
            cfg,
            train_dir,
            steps=max_steps,
            progress=progress,
            max_minutes=minutes,
            max_cpu_seconds=remaining,
        )
    except NumericalError as e:
        # one diverging learner must not stop the suite: the ledger says so (a rerun does not
        # train it again) and the method is evaluated at its best validated checkpoint, if any
        led = {"cpu_s": float(led.get("cpu_s", 0.0)) + (time.process_time() - start),
               "steps": _last_logged_step(train_dir), "diverged": str(e)}  # fmt: skip
        atomic_write_text(json.dumps(led, indent=2) + "\n", train_dir / "benchmark.json")
        return led, "diverged"
    led = {"cpu_s": float(led.get("cpu_s", 0.0)) + (time.process_time() - start), "steps": int(res.steps),
           "best_step": res.best_step, "best_val": res.best_val}  # fmt: skip
    atomic_write_text(json.dumps(led, indent=2) + "\n", train_dir / "benchmark.json")
    return led, _training_done(led, budget_s, max_steps)


def _last_logged_step(train_dir: Path) -> int:
    """The last step in ``metrics.jsonl`` (0 when none was logged): how far a diverged run got."""
    from bayesmeta.training import read_metrics

    records, _ = read_metrics(train_dir / "metrics.jsonl")
    return max((r["step"] for r in records if isinstance(r.get("step"), int)), default=0)


# ------------------------------------------------------------------------------ evaluation
def _test_batches(suite: Suite, source: TaskSource) -> tuple[Any, int]:
    n, tpb = suite.n_episodes, suite.tasks_per_batch
    return iter_episodes(source, n, seed=suite.seed, tasks_per_batch=tpb), -(-n // tpb)


def _reference_scores(learner: Any, suite: Suite, source: TaskSource) -> dict[str, torch.Tensor]:
    """Per-task mean KL(exact || learner) and W2 over query points (LinearGaussian suites)."""
    from bayesmeta.devices import batch_to_learner
    from bayesmeta.diagnostics.reference import exact_reference, score_against_reference

    out: dict[str, list[torch.Tensor]] = {"kl": [], "w2": []}
    batches, _ = _test_batches(suite, source)
    rng = torch.get_rng_state()
    try:
        with torch.no_grad():
            for batch in batches:
                torch.manual_seed(suite.seed)  # as evaluate() does before every call
                pred = learner(batch_to_learner(batch, learner))
                ref = exact_reference(source, batch, batch.query_x)  # type: ignore[arg-type]
                sc = score_against_reference(pred, ref)
                for k in out:
                    out[k].append(sc[k].mean(-1).double().cpu())
    finally:
        torch.set_rng_state(rng)
    return {k: torch.cat(v) for k, v in out.items()}


def _calibrated_view(res: EvaluationResult, label: str) -> EvaluationResult:
    """The temperature-scaled side of ``res`` as a result of its own (metrics and predictions)."""
    from bayesmeta.calibration import TemperatureScaling
    from bayesmeta.predictive import CategoricalPredictive

    assert res.calibrated is not None
    tau = float(res.calibrated.calibrator["temperature"])
    preds = dict(res.predictions)
    if "sample_log_probs" in preds:
        scaled = TemperatureScaling(tau)(CategoricalPredictive(logits=preds["sample_log_probs"]))
        preds["sample_log_probs"] = scaled.sample_log_probs
    out = EvaluationResult(
        label, res.task_kind, dict(res.calibrated.per_task), dict(res.calibrated.summary), preds,
        res.episode_fingerprint, res.wall_seconds,
    )  # fmt: skip
    out.protocol = {"temperature": tau, "n_calibration_tasks": res.calibrated.n_calibration_tasks}
    return out


def _evaluate(
    suite: Suite, entry: MethodEntry, cfg: dict[str, Any], train_dir: Path, progress: bool
) -> EvaluationResult:
    from bayesmeta.calibration import TemperatureScaling
    from bayesmeta.runs import environment_info, load_learner

    learner, _ = load_learner(train_dir, "best")
    source = episode_source(suite, cfg)
    batches, total = _test_batches(suite, source)
    cal_eps: list[TaskBatch] | None = None
    calibrator = None
    if entry.calibrator == "temperature":
        calibrator = TemperatureScaling()
        cal_eps = fixed_episodes(
            episode_source(suite, cfg, "val"),
            suite.val_episodes,
            seed=suite.seed + _CAL_SEED_OFFSET,
            tasks_per_batch=suite.tasks_per_batch,
        )
    res = evaluate(
        learner, batches, method=entry.label, progress=progress, seed=suite.seed, total=total,
        max_tasks_per_call=4, calibrator=calibrator, calibration_episodes=cal_eps,
    )  # fmt: skip
    if entry.calibrator is not None:
        res = _calibrated_view(res, entry.label)
    if suite.reference == "linear_gaussian":
        for k, v in _reference_scores(learner, suite, source).items():
            res.per_task[k] = v
            res.summary[k] = mean_ci(v, seed=suite.seed)
    ckpt = _read_json(train_dir / "benchmark.json") or {}
    res.protocol = {
        **res.protocol,
        "suite": suite.name,
        "method": cfg["method"],
        "model": cfg["model"],
        "tasks": suite.test_tasks or {**cfg["tasks"], **cfg["evaluation"]["tasks"]},
        "train_tasks": cfg["tasks"],
        "steps_trained": ckpt.get("steps"),
        "checkpoint": "best",
        "training_seed": cfg["training"]["seed"],
        "evaluation_seed": suite.seed,
        "n_episodes": suite.n_episodes,
        "tasks_per_batch": suite.tasks_per_batch,
        **environment_info(),
    }
    return res


# ------------------------------------------------------------------------------ the call
def _record_key(
    suite: Suite, entry: MethodEntry, cfg: dict[str, Any], budget_s: float, max_steps: int
) -> str:
    return _digest({"settings": _settings(suite), "method": asdict(entry), "config": cfg, "budget_s": budget_s,
                    "max_steps": max_steps})  # fmt: skip


def run_benchmark(
    suite: str | Suite,
    run_dir: str | Path,
    *,
    methods: Sequence[str] | None = None,
    budget_s: float | None = None,
    max_steps: int | None = None,
    n_episodes: int | None = None,
    smoke: bool = False,
    max_minutes: float | None = None,
    results_dir: str | Path | None = None,
    docs: str | Path | None = None,
    command: str | None = None,
    threads: int | None = 1,
    report: bool = True,
    progress: bool = True,
) -> BenchmarkResult:
    """Train, evaluate and report one suite (resuming whatever an earlier call left).

    Args:
        suite: a suite name (see :data:`~bayesmeta.benchmark.SUITES`) or a :class:`Suite`.
        run_dir: where the suite's folder goes (``run_dir/<suite>/``).
        methods: method labels to run (default: all of the suite); a derived method
            (``protonet+ts``) brings the method it is computed from.
        budget_s: CPU seconds of meta-training per method (default: the suite's).
        max_steps: meta-steps cap per method (default: the suite's).
        n_episodes: test tasks (default: the suite's).
        smoke: shrink the suite to seconds (:func:`~bayesmeta.benchmark.smoke_suite`).
        max_minutes: wall-clock limit of this call; methods not reached stay ``partial``.
        results_dir: where ``<suite>.json`` (and, for classification, ``uncertainty.json``) go;
            default ``benchmarks/results`` (``run_dir/<suite>/results`` for a smoke run).
        docs: a Markdown file whose table block for this suite is regenerated (None: none).
        command: the command line recorded with the results (default: this call's arguments).
        threads: ``torch.set_num_threads`` for the call (None: leave it).
        report: write the HTML report and figures.
        progress: tqdm bars.

    Raises:
        ConfigError: an unknown suite or method, bad budgets, or a run folder of other settings.
    """
    s = get_suite(suite) if isinstance(suite, str) else suite
    if smoke:
        s = smoke_suite(s)
    if n_episodes is not None:
        if isinstance(n_episodes, bool) or int(n_episodes) < 1:
            raise ConfigError(f"episodes: expected an integer >= 1, got {n_episodes!r}")
        s = replace(s, n_episodes=int(n_episodes))
    budget = float(s.budget_s if budget_s is None else budget_s)
    if not (math.isfinite(budget) and budget > 0):
        raise ConfigError(f"budget: expected a positive number of CPU seconds, got {budget_s!r}")
    steps_cap = int(s.max_steps if max_steps is None else max_steps)
    if isinstance(max_steps, bool) or steps_cap < 1:
        raise ConfigError(f"max_steps: expected an integer >= 1, got {max_steps!r}")
    if max_minutes is not None and not max_minutes > 0:
        raise ConfigError(f"max_minutes: expected a positive number, got {max_minutes!r}")
    entries = select_methods(s, list(methods) if methods is not None else None)
    configs = suite_configs(
        s, entries, steps_cap
    )  # every config checked before anything is written
    if threads is not None:
        torch.set_num_threads(int(threads))
    root = Path(run_dir)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"run_dir: expected a directory, got the file {str(root)!r}")
    suite_dir = root / s.name
    _check_suite_dir(suite_dir, s, smoke)
    deadline = None if max_minutes is None else time.monotonic() + 60.0 * max_minutes
    result = BenchmarkResult(s.name)
    ledgers: dict[str, tuple[dict[str, Any], str | None]] = {}
    for entry in entries:
        base = entry.derived_from or entry.label
        cfg = configs[base]
        train_dir = (root / s.train_suite / base) if s.train_suite else (suite_dir / base)
        out_dir = suite_dir / entry.label
        key = _record_key(s, entry, cfg, budget, steps_cap)
        rec_path = out_dir / "record.json"
        old = _read_json(rec_path) if rec_path.is_file() else None
        if (
            isinstance(old, dict)
            and old.get("record_key") == key
            and ((out_dir / "eval" / "summary.json").is_file() or old.get("episode_fingerprint") is None)
        ):
            rec = {k: v for k, v in old.items() if k != "record_key"}
            result.outcomes.append(MethodOutcome(entry.label, "skipped", rec))
            continue
        if base not in ledgers:
            ledgers[base] = _train(cfg, train_dir, budget, steps_cap, deadline, progress)
        led, stopped = ledgers[base]
        if stopped is None or (deadline is not None and time.monotonic() >= deadline):
            result.outcomes.append(MethodOutcome(entry.label, "partial"))
            continue
        failed = dict(budget_s=budget, ledger=led, max_steps=steps_cap, stopped=stopped)
        if stopped == "diverged" and not (train_dir / "checkpoints" / "best.pt").is_file():
            rec = failed_record(s, entry.label, **failed, error="training diverged before any validated checkpoint")
        else:
            try:
                res = _evaluate(s, entry, cfg, train_dir, progress)
            except NumericalError as e:  # e.g. an inner loop that diverges on out-of-range inputs
                rec = failed_record(s, entry.label, **failed, error=f"evaluation failed: {e}")
            else:
                res.save(out_dir / "eval")
                rec = make_record(
                    s, entry.label, res, budget_s=budget, ledger=led, stopped=stopped, max_steps=steps_cap
                )
        atomic_write_text(json.dumps({**rec, "record_key": key}, indent=2) + "\n", rec_path)
        result.outcomes.append(MethodOutcome(entry.label, "done", rec))
    result.records = [o.record for o in result.outcomes if o.record is not None]
    result.complete = all(o.record is not None for o in result.outcomes)
    fps = {r["episode_fingerprint"] for r in result.records if r["episode_fingerprint"] is not None}
    if len(fps) > 1:
        raise DataError(
            f"suite {s.name}: the methods were evaluated on different episodes ({len(fps)} fingerprints); "
            f"delete {suite_dir} and run again"
        )
    if result.records:
        out = (
            Path(results_dir)
            if results_dir is not None
            else (suite_dir / "results" if smoke else Path("benchmarks/results"))
        )
        meta = {
            "suite": s.name,
            "description": s.description,
            "kind": s.kind,
            "smoke": smoke,
            "complete": result.complete,
            "pending": [o.label for o in result.outcomes if o.record is None],
            "budget_s": budget,
            "max_steps": steps_cap,
            "n_episodes": s.n_episodes,
            "command": command,
        }
        result.results_path = write_results(out, meta, result.records, docs=docs)
        if report and any(r["episode_fingerprint"] is not None for r in result.records):
            from bayesmeta.benchmark.figures import write_suite_report

            # a method that diverged before any validated checkpoint has nothing to show
            dirs = [suite_dir / o.label for o in result.outcomes
                    if o.record is not None and o.record.get("episode_fingerprint") is not None]  # fmt: skip
            result.report = write_suite_report(s, dirs, suite_dir / "report", configs, root)
    return result
