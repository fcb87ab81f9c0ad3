"""Run a study: check everything, meta-train every method per fold, evaluate on every dataset, report.

Layout of the output folder::

    OUT/study.yaml                          the resolved study config
    OUT/<fold>/<method>/                    a run directory (config.yaml, checkpoints/, metrics.jsonl,
                                            study_trained.json once its training call has finished)
    OUT/<fold>/<method>/eval/<dataset>/     summary.json, per_task.jsonl, predictions.pt (test episodes),
                                            clinical.json, referral.json, decision_curve.json
    OUT/report/report.html, report.json     one report grouped by dataset

Everything that can be checked before training is checked first (configs, every dataset's
episode design against every class's size, channels and image size against every backbone), so
a bad study fails with a clear error before anything is written.

A method whose training call has finished (``study_trained.json`` in its run directory, for the
same config) is not trained again: a study can be trained one method at a time
(``methods=["protonet"], evaluate=False``, each under its own CPU budget) and then evaluated and
reported in one call. A run killed mid-training resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from bayesmeta.config import METHODS, TASKS, build_model, resolve_config
from bayesmeta.evaluation import EvaluationResult, evaluate
from bayesmeta.exceptions import ConfigError, ShapeError
from bayesmeta.io import atomic_write_text
from bayesmeta.metrics import (
    MeanCI,
    ReferralOutcome,
    ReferralRule,
    aggregate_clinical,
    clinical_metrics,
    decision_curve,
    fit_referral_rule,
)
from bayesmeta.metrics.decision_curve import DecisionCurve
from bayesmeta.predictive import CategoricalPredictive
from bayesmeta.study.config import dataset_pool_name, load_study, resolve_study
from bayesmeta.tasks import TaskBatch, fixed_episodes
from bayesmeta.tasks.families import MEDICAL_FAMILIES
from bayesmeta.tasks.medical import check_backbone_input

__all__ = ["Fold", "DatasetResult", "StudyResult", "plan_folds", "run_study"]

_EVAL_FAMILIES = tuple(f for f in MEDICAL_FAMILIES if f != "medical_pool")


@dataclass(frozen=True)
class Fold:
    """One meta-training source and the datasets its learners are tested on."""

    name: str
    meta_train: dict[str, Any]
    datasets: tuple[str, ...]
    description: str


@dataclass
class DatasetResult:
    """One method's results on one dataset (within one fold).

    ``skipped`` holds the reason when the method could not be evaluated on the dataset (e.g. a
    2-way MAML head on a 5-way dataset); every other field is then empty.
    """

    dataset: str
    method: str
    fold: str
    skipped: str | None = None
    summary: dict[str, MeanCI] = field(default_factory=dict)
    clinical: dict[str, MeanCI] = field(default_factory=dict)
    rule: ReferralRule | None = None
    referral: ReferralOutcome | None = None
    curve: DecisionCurve | None = None
    predictive: CategoricalPredictive | None = None
    targets: torch.Tensor | None = None
    eval_dir: Path | None = None
    run_dir: Path | None = None


@dataclass
class StudyResult:
    """Every (fold, method, dataset) result and where the report went."""

    config: dict[str, Any]
    results: list[DatasetResult]
    report: Path | None = None

    def for_dataset(self, dataset: str) -> list[DatasetResult]:
        """The results on one dataset, in method order."""
        return [r for r in self.results if r.dataset == dataset]


def plan_folds(cfg: dict[str, Any]) -> list[Fold]:
    """The folds of a resolved study config (see :mod:`bayesmeta.study.config`)."""
    names = list(cfg["datasets"])
    if cfg["protocol"] == "cross_domain":
        mt = cfg["meta_train"]
        return [Fold("cross_domain", dict(mt), tuple(names), f"meta-trained on {mt['name']} ({_short(mt)}), tested on every dataset")]
    folds = []
    for held in names:
        pool = [dataset_pool_name(d, cfg["datasets"][d]["tasks"]) for d in names if d != held]
        mt = {**cfg["meta_train"], "datasets": pool}
        folds.append(Fold(f"without_{held}", mt, (held,), f"meta-trained on {', '.join(pool)}; tested on held-out {held}"))
    return folds


def _short(opts: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in opts.items() if k != "name")


def _train_config(cfg: dict[str, Any], fold: Fold, label: str) -> dict[str, Any]:
    entry = cfg["methods"][label]
    tasks = {**fold.meta_train, **(entry.get("meta_train") or {})}
    ev = cfg["evaluation"]
    out = {
        "method": dict(entry["method"]),
        "tasks": tasks,
        "training": dict(cfg["training"]),
        "evaluation": {"n_episodes": int(ev["val_episodes"]), "seed": int(ev["seed"])},
    }
    if METHODS.get(entry["method"].get("name")) is None or METHODS[entry["method"]["name"]].backbone:
        out["model"] = dict(entry.get("model") or {})
    return out


def _dataset_sources(cfg: dict[str, Any], label: str) -> tuple[Any, Any]:
    tasks = dict(cfg["datasets"][label]["tasks"])
    name = tasks.pop("name", None)
    if name not in _EVAL_FAMILIES:
        raise ConfigError(f"datasets.{label}.tasks.name: expected one of {', '.join(_EVAL_FAMILIES)}, got {name!r}")
    valid = TASKS[name].keys
    bad = [k for k in tasks if k not in valid]
    if bad:
        raise ConfigError(f"datasets.{label}.tasks: unknown key(s) {', '.join(map(repr, bad))}; valid keys are: {', '.join(valid)}")
    build = TASKS[name].build
    return build(tasks, "test"), build(tasks, "val")


def _backbone(resolved: dict[str, Any]) -> Any:
    return build_model(resolved) if resolved.get("model") else None


def _skip_reason(backbone: Any, n_way: int, method: str, method_cfg: dict[str, Any]) -> str | None:
    """Why ``method`` cannot be evaluated on ``n_way``-way episodes, or None if it can.

    Two things fix a learner's number of classes: an output head of the backbone (MAML family)
    and an ``n_way`` option of the method (DKT's one-vs-rest GPs); either must match the dataset.
    """
    head = getattr(backbone, "out_features", None)
    if head is not None and head != n_way:
        return (
            f"{method} has a {head}-way output head but the dataset's episodes are {n_way}-way; "
            f"add a method entry with meta_train: {{n_way: {n_way}}} to evaluate it"
        )
    configured = method_cfg.get("n_way")
    if configured is not None and configured != n_way:
        return (
            f"{method} is configured with method.n_way = {configured} but the dataset's episodes are "
            f"{n_way}-way; leave n_way out (taken from each episode) or add a method entry for {n_way}-way"
        )
    return None


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_text(json.dumps(obj, indent=2, allow_nan=True), path)


def _ci(d: dict[str, MeanCI]) -> dict[str, Any]:
    return {k: v.to_dict() for k, v in d.items()}


def _evaluate_dataset(
    learner: Any, label: str, fold: str, dataset: str, test_eps: list[TaskBatch], val_eps: list[TaskBatch],
    cfg: dict[str, Any], out_dir: Path, progress: bool,
) -> DatasetResult:  # fmt: skip
    ev, ref = cfg["evaluation"], cfg["referral"]
    positive = cfg["datasets"][dataset]["positive"]
    seed = int(ev["seed"])
    res: EvaluationResult = evaluate(learner, test_eps, method=label, progress=progress, seed=seed)
    val: EvaluationResult = evaluate(learner, val_eps, method=label, progress=progress, seed=seed + 1)
    pred = CategoricalPredictive(logits=res.predictions["sample_log_probs"])
    y = res.predictions["targets"]
    pred_val = CategoricalPredictive(logits=val.predictions["sample_log_probs"])
    y_val = val.predictions["targets"]
    per_task = clinical_metrics(
        pred, y, positive=positive, threshold=float(ev["threshold"]), target_specificity=float(ev["target_specificity"])
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rule = fit_referral_rule(
            pred_val, y_val, objective=ref["objective"], target_accuracy=ref["target_accuracy"],
            max_referral=ref["max_referral"], costs=ref["costs"], score=ref["score"], positive=positive,
            threshold=float(ev["threshold"]),
        )  # fmt: skip
    for w in caught:  # re-raise with the context a study reader needs
        warnings.warn(f"{fold}/{label}/{dataset}: {w.message}", UserWarning, stacklevel=2)
    outcome = rule.evaluate(pred, y, seed=seed)
    curve = decision_curve(pred, y, positive=positive)
    d = out_dir / dataset
    res.save(d)
    _write_json(d / "clinical.json", {"summary": _ci(aggregate_clinical(per_task, seed=seed)),
                                      "per_task": {k: v.tolist() for k, v in per_task.items()}})
    _write_json(d / "referral.json", {
        "rule": {"score": rule.score, "tau": rule.tau, "objective": rule.objective, "params": rule.params,
                 "positive": rule.positive, "threshold": rule.threshold, "validation": rule.validation},
        "summary": _ci(outcome.summary), "pooled": outcome.pooled,
        "per_task": {k: v.tolist() for k, v in outcome.per_task.items()},
    })  # fmt: skip
    _write_json(d / "decision_curve.json", {
        "thresholds": curve.thresholds.tolist(), "net_benefit": curve.net_benefit.tolist(),
        "treat_all": curve.treat_all.tolist(), "treat_none": curve.treat_none.tolist(),
    })  # fmt: skip
    return DatasetResult(
        dataset, label, fold, None, res.summary, aggregate_clinical(per_task, seed=seed), rule, outcome, curve, pred, y, d,
        out_dir.parent,
    )


def _train_once(resolved: dict[str, Any], run_dir: Path, progress: bool) -> None:
    """Train unless this run directory's training already finished for this config."""
    from bayesmeta.runs import train_run
    from bayesmeta.training import config_fingerprint

    marker = run_dir / "study_trained.json"
    fp = config_fingerprint(resolved)
    if marker.is_file():
        try:
            done = json.loads(marker.read_text())
        except json.JSONDecodeError:
            done = {}
        if done.get("fingerprint") == fp:
            return
    if (run_dir / "config.yaml").is_file() and marker.is_file():
        marker.unlink()  # a different config: train_run refuses it with a clear error
    res = train_run(resolved, run_dir, progress=progress)
    _write_json(marker, {"fingerprint": fp, "steps": res.steps, "best_val": res.best_val, "best_step": res.best_step})


def run_study(
    config: dict[str, Any] | str | Path,
    out: str | Path,
    *,
    steps: int | None = None,
    n_episodes: int | None = None,
    val_episodes: int | None = None,
    progress: bool = True,
    report: bool = True,
    methods: list[str] | None = None,
    evaluate_methods: bool = True,
) -> StudyResult:
    """Check, train, evaluate and report a study.

    Args:
        config: a study dict or YAML path (see :mod:`bayesmeta.study.config`).
        out: the output folder (created; existing run directories are resumed).
        steps: override ``training.steps`` of every method (e.g. a smoke run).
        n_episodes: override the evaluation's test episode count.
        val_episodes: override the evaluation's validation episode count.
        progress: tqdm bars.
        report: write ``OUT/report/report.html`` (and ``report.json``) when evaluating.
        methods: train (and evaluate) only these method labels; default all.
        evaluate_methods: False trains only (e.g. one method per CPU-budgeted call).

    Raises:
        ConfigError, DataError: a bad study, found before anything is trained or written.
    """
    from bayesmeta.runs import load_learner

    cfg = load_study(config) if isinstance(config, str | Path) else resolve_study(config)
    if steps is not None:
        cfg["training"]["steps"] = int(steps)
    if n_episodes is not None:
        cfg["evaluation"]["n_episodes"] = int(n_episodes)
    if val_episodes is not None:
        cfg["evaluation"]["val_episodes"] = int(val_episodes)
    ev = cfg["evaluation"]
    folds = plan_folds(cfg)
    if methods is not None:
        unknown = [m for m in methods if m not in cfg["methods"]]
        if unknown:
            raise ConfigError(f"methods: unknown method label(s) {unknown}; the study has {list(cfg['methods'])}")

    # ---- pre-flight: every config, dataset and backbone, before anything is written
    sources = {d: _dataset_sources(cfg, d) for d in cfg["datasets"]}
    plans: list[tuple[Fold, str, dict[str, Any], dict[str, str | None]]] = []
    for fold in folds:
        for label in cfg["methods"]:
            if methods is not None and label not in methods:
                continue
            try:
                resolved = resolve_config(_train_config(cfg, fold, label))
            except ConfigError as e:
                raise ConfigError(f"methods.{label} ({fold.name}): {e}") from None
            backbone = _backbone(resolved)
            skips: dict[str, str | None] = {}
            for d in fold.datasets:
                test_src = sources[d][0]
                if backbone is not None:
                    try:
                        check_backbone_input(test_src.support, backbone)
                    except ShapeError as e:
                        raise ConfigError(f"datasets.{d} with methods.{label}: {e}") from None
                skips[d] = _skip_reason(backbone, test_src.n_way, label, resolved["method"])
            plans.append((fold, label, resolved, skips))

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(yaml.safe_dump(cfg, sort_keys=False), out_dir / "study.yaml")
    seed, tpb = int(ev["seed"]), int(ev["tasks_per_batch"])
    episodes = {
        d: (
            fixed_episodes(sources[d][0], int(ev["n_episodes"]), seed=seed, tasks_per_batch=tpb),
            fixed_episodes(sources[d][1], int(ev["val_episodes"]), seed=seed + 1_000_003, tasks_per_batch=tpb),
        )
        for d in cfg["datasets"]
    }
    results: list[DatasetResult] = []
    for fold, label, resolved, skips in plans:
        run_dir = out_dir / fold.name / label
        _train_once(resolved, run_dir, progress)
        if not evaluate_methods:
            continue
        learner, _ = load_learner(run_dir)
        for d in fold.datasets:
            if skips[d] is not None:
                results.append(DatasetResult(d, label, fold.name, skipped=skips[d], run_dir=run_dir))
                continue
            results.append(
                _evaluate_dataset(learner, label, fold.name, d, *episodes[d], cfg, run_dir / "eval", progress)
            )
    study = StudyResult(cfg, results)
    if report and evaluate_methods:
        from bayesmeta.study.report import write_study_report

        study.report = write_study_report(study, out_dir / "report", folds)
    return study
