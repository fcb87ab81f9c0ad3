"""Reading evaluated run directories for the report.

A run directory, as written by :mod:`bayesmeta.evaluation`::

    RUN_DIR/config.yaml              resolved config; ``method: {name: ...}``
    RUN_DIR/eval/summary.json        {"method", "task_kind", "n_tasks", "episode_fingerprint",
                                      "wall_seconds", "protocol": {...},
                                      "metrics": {name: {"mean","low","high","n","level","method"}}}
    RUN_DIR/run_info.json            optional; versions and seeds of the training run
    RUN_DIR/eval/per_task.jsonl      one JSON object per task: metric name -> float
    RUN_DIR/eval/calibrated_per_task.jsonl  optional (``evaluate --calibrate``): per-task metrics
                                     after the calibrator described in summary.json["calibrated"]
    RUN_DIR/eval/predictions.pt      optional; plain tensors, loaded with weights_only=True:
                                     classification {"sample_log_probs" [M,T,Q,C], "targets" [T,Q]}
                                     regression {"sample_mean", "sample_variance" [M,T,Q,Dy],
                                                 "targets" [T,Q,Dy]}; optional "query_mask" [T,Q]

Evaluations written before episode fingerprints existed load with ``episode_fingerprint = None``;
the report never compares them with other runs. A run directory given twice is read once.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from bayesmeta.calibration import TemperatureScaling, VarianceScaling
from bayesmeta.evaluation import read_predictions
from bayesmeta.exceptions import CheckpointError, DataError, InvalidValueError
from bayesmeta.metrics.aggregation import mean_ci
from bayesmeta.metrics.task_metrics import METRIC_INFO
from bayesmeta.predictive import CategoricalPredictive, GaussianPredictive

__all__ = ["TASK_KINDS", "RunResult", "load_run", "load_runs"]

TASK_KINDS: tuple[str, ...] = ("classification", "regression")
_CI_KEYS = ("mean", "low", "high")


@dataclass
class RunResult:
    """One evaluated run.

    Attributes:
        run_dir: the directory.
        method: method name (from ``summary.json``, else ``config.yaml``'s ``method.name``).
        label: unique display name among the runs of one report.
        task_kind: ``"classification"`` or ``"regression"``.
        n_tasks: number of evaluation tasks.
        summary: metric name -> ``{"mean", "low", "high", "n", "level", "method"}``.
        per_task: metric name -> ``[T]`` float64 array (NaN where a task lacks the metric).
        predictive: the predictive rebuilt from ``predictions.pt``, or None.
        targets: its targets, or None.
        query_mask: optional ``[T, Q]`` bool mask.
        episode_fingerprint: SHA-256 of the evaluated tasks, or None (evaluated by an older
            version): only runs with equal fingerprints are compared.
        protocol: how the run was trained and evaluated (method options, model, tasks, steps,
            seeds, versions...); from ``summary.json``, completed from ``config.yaml`` and
            ``run_info.json``.
        calibrated: ``summary.json``'s ``calibrated`` section (calibrator, metrics), or None.
        calibrated_per_task: metric name -> ``[T]`` after calibration.
        calibrated_predictive: the predictive after a scaling calibrator (rebuilt from the
            saved temperature or scale), or None.
    """

    run_dir: Path
    method: str
    label: str
    task_kind: str
    n_tasks: int
    summary: dict[str, dict[str, Any]]
    per_task: dict[str, np.ndarray] = field(default_factory=dict)
    predictive: CategoricalPredictive | GaussianPredictive | None = None
    targets: torch.Tensor | None = None
    query_mask: torch.Tensor | None = None
    episode_fingerprint: str | None = None
    protocol: dict[str, Any] = field(default_factory=dict)
    calibrated: dict[str, Any] | None = None
    calibrated_per_task: dict[str, np.ndarray] = field(default_factory=dict)
    calibrated_predictive: CategoricalPredictive | GaussianPredictive | None = None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: expected valid JSON, got a parse error at line {e.lineno}: {e.msg}") from e


def _read_config(run_dir: Path) -> dict[str, Any]:
    cfg = run_dir / "config.yaml"
    if not cfg.is_file():
        return {}
    try:
        data = yaml.safe_load(cfg.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise DataError(f"{cfg}: expected valid YAML, got {' '.join(str(e).split())}") from e
    return data if isinstance(data, dict) else {}


def _method_from_config(config: dict[str, Any]) -> str | None:
    method = config.get("method")
    name = method.get("name") if isinstance(method, dict) else method
    return str(name) if name else None


def _protocol(summary: dict[str, Any], config: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """The evaluation's protocol, completed from config.yaml and run_info.json where missing."""
    proto = dict(summary.get("protocol") or {})
    tr = config.get("training") if isinstance(config.get("training"), dict) else {}
    ev = config.get("evaluation") if isinstance(config.get("evaluation"), dict) else {}
    tasks = config.get("tasks") if isinstance(config.get("tasks"), dict) else {}
    fallback = {
        "method": config.get("method"),
        "model": config.get("model"),
        "tasks": {**tasks, **(ev.get("tasks") or {})} if tasks else None,
        "training_seed": tr.get("seed"),
        "evaluation_seed": ev.get("seed"),
        "n_episodes": ev.get("n_episodes"),
    }
    info_path = run_dir / "run_info.json"
    if info_path.is_file():
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            info = {}
        if isinstance(info, dict):
            fallback["versions"] = info.get("versions")
    for k, v in fallback.items():
        if proto.get(k) is None and v is not None:
            proto[k] = v
    return proto


def _read_per_task(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        return {}
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: line {i}: expected a JSON object, got a parse error: {e.msg}") from e
        if not isinstance(row, dict):
            raise DataError(f"{path}: line {i}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    names = sorted({k for r in rows for k, v in r.items() if isinstance(v, int | float) and not isinstance(v, bool)})
    return {k: np.array([float(r.get(k, math.nan)) for r in rows], dtype=np.float64) for k in names}


def _read_predictions(path: Path, kind: str) -> tuple[Any, torch.Tensor | None, torch.Tensor | None]:
    """The optional predictions file, through the evaluation layer's one reader."""
    if not path.is_file():
        return None, None, None
    try:
        return read_predictions(path, kind)
    except CheckpointError as e:
        raise DataError(f"predictions.pt: {e}") from None


def load_run(run_dir: str | Path) -> RunResult:
    """Read one run directory (see the module docstring); raises a BayesMetaError naming the file."""
    rd = Path(run_dir)
    if not rd.is_dir():
        raise InvalidValueError(f"run_dir: expected an existing directory, got {str(rd)!r}")
    summary_path = rd / "eval" / "summary.json"
    if not summary_path.is_file():
        raise DataError(f"run_dir: expected {summary_path} (run `bayesmeta evaluate` first), it does not exist")
    summary = _read_json(summary_path)
    if not isinstance(summary, dict) or not isinstance(summary.get("metrics"), dict):
        raise DataError(f"{summary_path}: expected an object with a 'metrics' object")
    kind = summary.get("task_kind")
    if kind not in TASK_KINDS:
        raise DataError(f"{summary_path}: expected task_kind in {list(TASK_KINDS)}, got {kind!r}")
    metrics: dict[str, dict[str, Any]] = {}
    for name, ci in summary["metrics"].items():
        if not isinstance(ci, dict) or any(not isinstance(ci.get(k), int | float) for k in _CI_KEYS):
            raise DataError(f"{summary_path}: metric {name!r}: expected numbers 'mean', 'low', 'high', got {ci!r}")
        metrics[name] = dict(ci)
    config = _read_config(rd)
    method = summary.get("method") or _method_from_config(config) or rd.name
    per_task = _read_per_task(rd / "eval" / "per_task.jsonl")
    for name, values in per_task.items():  # known metrics only in per_task.jsonl still get a CI
        finite = values[np.isfinite(values)]
        if name not in metrics and name in METRIC_INFO and finite.size:
            metrics[name] = mean_ci(finite).to_dict()
    pred, targets, mask = _read_predictions(rd / "eval" / "predictions.pt", kind)
    n_tasks = int(summary.get("n_tasks") or (next(iter(per_task.values())).size if per_task else 0))
    fingerprint = summary.get("episode_fingerprint") or None
    protocol = _protocol(summary, config, rd)
    protocol.setdefault("n_tasks", n_tasks)
    if targets is not None:
        protocol.setdefault("n_query_points", int(mask.sum()) if mask is not None else int(targets.shape[0] * targets.shape[1]))
    run = RunResult(
        rd, str(method), str(method), kind, n_tasks, metrics, per_task, pred, targets, mask,
        str(fingerprint) if fingerprint else None, protocol,
    )
    _read_calibrated(run, summary, summary_path)
    return run


def _read_calibrated(run: RunResult, summary: dict[str, Any], summary_path: Path) -> None:
    """Fill the calibrated fields of ``run`` from ``summary.json`` and ``calibrated_per_task.jsonl``."""
    cal = summary.get("calibrated")
    if cal is None:
        return
    if not isinstance(cal, dict) or not isinstance(cal.get("calibrator"), dict) or not isinstance(cal.get("metrics"), dict):
        raise DataError(f"{summary_path}: expected 'calibrated' to hold 'calibrator' and 'metrics' objects, got {cal!r}")
    run.calibrated = cal
    run.calibrated_per_task = _read_per_task(run.run_dir / "eval" / "calibrated_per_task.jsonl")
    info = cal["calibrator"]
    try:
        if info.get("name") == "temperature_scaling" and isinstance(run.predictive, CategoricalPredictive):
            run.calibrated_predictive = TemperatureScaling(float(info["temperature"]))(run.predictive)
        elif info.get("name") == "variance_scaling" and isinstance(run.predictive, GaussianPredictive):
            run.calibrated_predictive = VarianceScaling(float(info["scale"]))(run.predictive)
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{summary_path}: calibrator {info!r} cannot be applied: {e}") from e


def load_runs(run_dirs: list[str | Path] | list[Path]) -> list[RunResult]:
    """Read several runs and give each a unique label (the method name, plus the directory on clashes).

    A directory given more than once (also through another spelling of the same path) is read
    once, with a warning.
    """
    if not run_dirs:
        raise InvalidValueError("run_dirs: expected at least one run directory, got none")
    unique: list[Path] = []
    seen_dirs: set[Path] = set()
    for d in run_dirs:
        key = Path(d).resolve()
        if key in seen_dirs:
            warnings.warn(f"run_dirs: {str(d)!r} was given more than once; it is shown once", UserWarning, stacklevel=2)
            continue
        seen_dirs.add(key)
        unique.append(Path(d))
    runs = [load_run(d) for d in unique]
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.method] = counts.get(r.method, 0) + 1
    seen: set[str] = set()
    for r in runs:
        label = r.method if counts[r.method] == 1 else f"{r.method} ({r.run_dir.name})"
        base, k = label, 2
        while label in seen:
            label, k = f"{base} #{k}", k + 1
        seen.add(label)
        r.label = label
    return runs
