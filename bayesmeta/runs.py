"""Run directories: train and evaluate a config end to end (what the CLI calls).

Layout (DESIGN.md section 7): ``config.yaml`` (the resolved config), ``run_info.json`` (config
fingerprints, versions of Python, torch and the libraries, device, dtype, seed),
``checkpoints/{last,best}.pt``, ``metrics.jsonl``, ``eval/`` and ``report/``. Training on an
existing run directory resumes from its last checkpoint; a different config is refused.

Reproducibility: ``training.seed`` seeds the learner's initial weights (:func:`init_learner`,
under a forked RNG so nothing else is disturbed), the trainer's task generator and the global
RNG that sampling learners draw from; validation and test episodes come from
``evaluation.seed``. Two fresh processes training the same config on the same machine (and thread
count) write byte-identical checkpoints and ``metrics.jsonl``.
"""

from __future__ import annotations

import hashlib
import json
import platform
import warnings
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import yaml

from bayesmeta.calibration.apply import make_calibrator
from bayesmeta.config import (
    build_episode_stream,
    build_episodes,
    build_learner,
    build_task_source,
    load_config,
    resolve_config,
    task_kind,
)
from bayesmeta.devices import resolve_device, resolve_dtype
from bayesmeta.distributed.collectives import run_on_main
from bayesmeta.distributed.context import DistContext
from bayesmeta.evaluation import EvaluationResult, evaluate
from bayesmeta.exceptions import CheckpointError, ConfigError
from bayesmeta.inference.base import MetaLearner, StepOutput
from bayesmeta.io import atomic_write_text
from bayesmeta.training import MetaTrainer, TrainResult, config_fingerprint, load_checkpoint

__all__ = [
    "train_run",
    "evaluate_run",
    "load_run_config",
    "load_learner",
    "init_learner",
    "environment_info",
    "resolved_config_sha256",
]

#: Distributions whose versions are recorded with every run.
_LIBRARIES = ("bayesmeta", "torch", "numpy", "pyro-ppl", "gpytorch", "arviz", "scipy", "pyyaml")


def environment_info() -> dict[str, Any]:
    """Versions and platform a run was made with (for ``run_info.json`` and report protocols)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for lib in _LIBRARIES:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            versions[lib] = None
    return {
        "versions": versions,
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
    }


def resolved_config_sha256(cfg: dict[str, Any]) -> str:
    """SHA-256 of the whole resolved config (every section), as canonical JSON."""
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()


def _check_run_dir(run: Path) -> None:
    if run.exists() and not run.is_dir():
        raise ConfigError(f"run_dir: expected a directory (new or existing run), got the file {str(run)!r}")
    for parent in run.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"run_dir: cannot create {str(run)!r}: {str(parent)!r} is a file")
            break


def load_run_config(run_dir: str | Path) -> dict[str, Any]:
    """The resolved config stored in ``run_dir/config.yaml``."""
    run = Path(run_dir)
    if run.exists() and not run.is_dir():
        raise ConfigError(f"run_dir: expected a bayesmeta run directory, got the file {str(run)!r}")
    path = run / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"run_dir: {str(run_dir)!r} has no config.yaml; is it a bayesmeta run directory?")
    return load_config(path)


def init_learner(
    cfg: dict[str, Any], *, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None
) -> MetaLearner:
    """The config's learner with initial weights drawn from ``training.seed``, placed on
    ``device``/``dtype`` (default: the config's ``training.device``/``training.dtype``).

    The draw happens under a forked RNG, so the global RNG is left as it was and the same seed
    gives the same weights whatever ran before in the process.

    Raises:
        ConfigError: a device this machine lacks, or an unknown dtype.
    """
    tr = cfg["training"]
    dev = resolve_device(device if device is not None else tr.get("device"), "training.device")
    dt = resolve_dtype(dtype if dtype is not None else tr.get("dtype"), "training.dtype")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(tr["seed"]))
        learner = build_learner(cfg)
    return learner.to(device=dev, dtype=dt)


def _write_run_info(run: Path, cfg: dict[str, Any], resumed: bool, world_size: int = 1) -> None:
    """Write ``run_info.json``; on resume keep the first session's record and warn if versions
    changed (bitwise reproducibility then no longer holds)."""
    path = run / "run_info.json"
    env = environment_info()
    info: dict[str, Any] = {
        "config_fingerprint": config_fingerprint(cfg),
        "config_sha256": resolved_config_sha256(cfg),
        "seed": cfg["training"]["seed"],
        "device": cfg["training"]["device"],
        "dtype": cfg["training"]["dtype"],
        "world_size": world_size,
        **env,
    }
    if resumed and path.is_file():
        try:
            first = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            first = None
        if isinstance(first, dict):
            if first.get("versions") != env["versions"]:
                warnings.warn(
                    f"{run}: resumed with other library versions than the run started with "
                    f"({first.get('versions')} -> {env['versions']}); the result may differ bitwise "
                    f"from an uninterrupted run",
                    RuntimeWarning,
                    stacklevel=3,
                )
            # the first session's record stays; a resume in another environment is appended
            now = {k: info[k] for k in ("versions", "device", "world_size")}
            sessions = list(first.get("resumed_with", []))
            was = {k: first.get(k, 1 if k == "world_size" else None) for k in now}  # older records: 1 process
            if now != was and (not sessions or sessions[-1] != now):
                sessions.append(now)
            info = {**first, "config_sha256": info["config_sha256"]}
            if sessions:
                info["resumed_with"] = sessions
    atomic_write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", path)


def train_run(
    config: dict[str, Any] | str | Path,
    run_dir: str | Path,
    *,
    steps: int | None = None,
    seed: int | None = None,
    device: str | None = None,
    dtype: str | None = None,
    progress: bool = True,
    distributed: DistContext | None = None,
    callback: Callable[[int, StepOutput], None] | None = None,
    max_minutes: float | None = None,
    max_cpu_seconds: float | None = None,
) -> TrainResult:
    """Meta-train the config into ``run_dir``, resuming if it already holds a checkpoint.

    Args:
        config: a config dict (resolved here) or a YAML path.
        run_dir: the run directory (created if missing).
        steps: override ``training.steps`` (e.g. to train an existing run further).
        seed: override ``training.seed`` (a new run; an existing one must keep its seed).
        device: override ``training.device`` (may differ on resume).
        dtype: override ``training.dtype``.
        progress: tqdm bars.
        distributed: this process's place in a multi-process run
            (:func:`bayesmeta.distributed.init_distributed`, called by the CLI under
            ``torchrun``): every process calls ``train_run`` with the same arguments; each trains
            on its block of every meta-batch, on ``distributed.device``, and rank 0 alone checks
            and writes the run directory. The run may be resumed with another number of processes.
        callback: ``callback(step, output)`` after every step (see :class:`MetaTrainer`).
        max_minutes: wall-clock budget of this call (default: ``training.max_minutes``).
        max_cpu_seconds: CPU-time budget of this call (see :class:`MetaTrainer`); ``None``: none.

    Raises:
        ConfigError: a bad override, a ``run_dir`` that is a file, a device this machine lacks,
            or ``steps`` below the checkpoint's step.
        CheckpointError: ``run_dir`` holds a run of a different config.
        DistributedError: another process died or stopped answering.
    """
    cfg = load_config(config) if isinstance(config, str | Path) else resolve_config(config)
    overrides = {"steps": steps, "seed": seed, "device": device, "dtype": dtype}
    if any(v is not None for v in overrides.values()):
        cfg["training"].update({k: v for k, v in overrides.items() if v is not None})
        cfg = resolve_config(cfg, check_build=False)
    run = Path(run_dir)
    world = 1 if distributed is None else distributed.world_size
    # checks the device before anything is written; each process computes on its own device
    learner = init_learner(cfg, device=None if distributed is None else distributed.device)

    def prepare() -> None:
        _check_run_dir(run)
        existing = run / "config.yaml"
        resumed = existing.is_file()
        if resumed and config_fingerprint(load_config(existing)) != config_fingerprint(cfg):
            raise CheckpointError(
                f"run_dir: {str(run)!r} holds a run of a different config; use a new --run-dir, "
                f"or the same config (only training.steps, device and logging intervals may change)"
            )
        run.mkdir(parents=True, exist_ok=True)
        atomic_write_text(yaml.safe_dump(cfg, sort_keys=False), existing)
        _write_run_info(run, cfg, resumed, world)

    if distributed is None:
        prepare()
    else:
        run_on_main(distributed, prepare, "preparing the run directory")
    tr = cfg["training"]
    trainer = MetaTrainer(
        learner,
        build_task_source(cfg, "train"),
        steps=tr["steps"],
        meta_batch_size=tr["meta_batch_size"],
        lr=tr["lr"],
        lr_decay_every=tr["lr_decay_every"],
        lr_decay=tr["lr_decay"],
        grad_clip=tr["grad_clip"],
        seed=tr["seed"],
        val_episodes=build_episodes(cfg, "val") if tr["val_episodes"] else None,
        val_every=tr["val_every"],
        run_dir=run,
        checkpoint_every=tr["checkpoint_every"],
        log_every=tr["log_every"],
        config=cfg,
        progress=progress,
        max_minutes=tr["max_minutes"] if max_minutes is None else max_minutes,
        max_cpu_seconds=max_cpu_seconds,
        distributed=distributed,
        callback=callback,
    )
    return trainer.fit()


def _checkpoint_path(run_dir: str | Path, checkpoint: str) -> Path:
    if checkpoint not in ("best", "last"):
        raise ConfigError(f"checkpoint: expected 'best' or 'last', got {checkpoint!r}")
    ckdir = Path(run_dir) / "checkpoints"
    path = ckdir / f"{checkpoint}.pt"
    if checkpoint == "best" and not path.exists():
        path = ckdir / "last.pt"
    if not path.exists():
        raise CheckpointError(
            f"run_dir: {str(run_dir)!r} has no checkpoint yet ({path} not found; train it first: bayesmeta train)"
        )
    return path


def load_learner(
    run_dir: str | Path,
    checkpoint: str = "best",
    *,
    device: str | None = None,
    dtype: str | None = None,
) -> tuple[MetaLearner, dict[str, Any]]:
    """Rebuild a run's learner from its config and load ``checkpoints/{checkpoint}.pt``.

    Falls back from ``best`` to ``last`` when the run kept no validation-best checkpoint. The
    learner is placed on ``device``/``dtype`` (default: the run's ``training.device``/``dtype``).
    """
    learner, cfg, _ = _load(run_dir, checkpoint, device, dtype)
    return learner, cfg


def _load(
    run_dir: str | Path, checkpoint: str, device: str | None, dtype: str | None
) -> tuple[MetaLearner, dict[str, Any], dict[str, Any]]:
    cfg = load_run_config(run_dir)
    path = _checkpoint_path(run_dir, checkpoint)
    ckpt = load_checkpoint(path, cfg)
    learner = init_learner(cfg, device=device, dtype=dtype)
    try:
        learner.load_state_dict(ckpt["learner"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the config's learner: {str(e).splitlines()[0]}") from None
    return learner, cfg, {"checkpoint": path.stem, "steps_trained": int(ckpt.get("step", 0))}


def _protocol(cfg: dict[str, Any], loaded: dict[str, Any], learner: MetaLearner) -> dict[str, Any]:
    """What a reviewer needs to judge a result: how the model was made and how it was tested."""
    ev, tr = cfg["evaluation"], cfg["training"]
    param = next(learner.parameters(), None)
    return {
        "method": cfg["method"],
        "model": cfg["model"],
        "tasks": {**cfg["tasks"], **ev["tasks"]},
        "train_tasks": cfg["tasks"],
        "steps_trained": loaded["steps_trained"],
        "checkpoint": loaded["checkpoint"],
        "training_seed": tr["seed"],
        "evaluation_seed": ev["seed"],
        "n_episodes": ev["n_episodes"],
        "tasks_per_batch": ev["tasks_per_batch"],
        "device": str(param.device) if param is not None else "cpu",
        "dtype": str(param.dtype).removeprefix("torch.") if param is not None else tr["dtype"],
        "config_fingerprint": config_fingerprint(cfg),
        **environment_info(),
    }


def evaluate_run(
    run_dir: str | Path,
    *,
    checkpoint: str = "best",
    n_episodes: int | None = None,
    task_overrides: dict[str, Any] | None = None,
    out_dir: str | Path | None = None,
    device: str | None = None,
    dtype: str | None = None,
    max_tasks_per_call: int | None = 1,
    progress: bool = True,
    calibrate: str | None = None,
    alpha: float = 0.1,
    score: str | None = None,
    distributed: DistContext | None = None,
) -> EvaluationResult:
    """Evaluate a trained run on its fixed test episodes and write the results.

    Episodes are drawn one batch at a time (never all in memory); the result carries the
    episode fingerprint and a protocol (method and options, model, task settings, steps trained,
    seeds, episodes, versions) that ``bayesmeta report`` shows.

    Args:
        run_dir: a trained run directory.
        checkpoint: ``"best"`` (validation-best, falling back to last) or ``"last"``.
        n_episodes: override ``evaluation.n_episodes``.
        task_overrides: extra ``evaluation.tasks`` overrides (e.g. ``{"n_way": 20}`` to test a
            5-way-trained ProtoNet 20-way); validated like the config's own.
        out_dir: where to write (default ``run_dir/eval``).
        device: where to evaluate (default: the run's ``training.device``).
        dtype: ``float32``/``float64`` (default: the run's ``training.dtype``).
        max_tasks_per_call: tasks per learner call (default 1: peak memory of one task's
            activations; ``None``: whole batches of ``evaluation.tasks_per_batch``). Per-task
            results do not depend on it.
        progress: tqdm bar and a summary line.
        calibrate: ``"temperature"`` or ``"conformal"``: fit that calibrator on the run's
            validation episodes (``training.val_episodes`` of its config, with the evaluation task
            overrides) and save calibrated metrics beside the raw ones.
        alpha: conformal miscoverage level.
        score: conformal score (default: ``lac`` / ``normalized``).
        distributed: this process's place in a multi-process evaluation (the CLI under
            ``torchrun``): every process calls ``evaluate_run`` with the same arguments, evaluates
            its share of the episode batches on ``distributed.device``, and rank 0 gathers the
            per-task results (identical to one process's) and alone writes them.
    """
    if distributed is not None:
        device = str(distributed.device)
    learner, cfg, loaded = _load(run_dir, checkpoint, device, dtype)
    if n_episodes is not None or task_overrides:
        if n_episodes is not None:
            cfg["evaluation"]["n_episodes"] = n_episodes
        if task_overrides:
            cfg["evaluation"]["tasks"] = {**cfg["evaluation"]["tasks"], **task_overrides}
        cfg = resolve_config(cfg, check_build=False)
    episodes, n_batches = build_episode_stream(cfg, "test")
    calibrator, cal_episodes = None, None
    if calibrate is not None:
        if not int(cfg["training"]["val_episodes"]):
            raise ConfigError("training.val_episodes: --calibrate fits on the run's validation episodes; got 0 of them")
        options = {"alpha": alpha, "score": score} if calibrate == "conformal" else {}
        calibrator = make_calibrator(calibrate, task_kind(cfg), **options)
        cal_episodes = build_episodes(cfg, "val", evaluation_tasks=True)
    result = evaluate(
        learner, episodes, method=cfg["method"]["name"], progress=progress, seed=cfg["evaluation"]["seed"],
        total=n_batches, max_tasks_per_call=max_tasks_per_call,
        calibrator=calibrator, calibration_episodes=cal_episodes, distributed=distributed,
    )
    result.protocol = _protocol(cfg, loaded, learner)
    target = Path(out_dir) if out_dir is not None else Path(run_dir) / "eval"
    if distributed is None:
        result.save(target)
    else:
        run_on_main(distributed, lambda: result.save(target), "writing the evaluation results")
    return result

