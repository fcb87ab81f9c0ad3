"""Run directories: train and evaluate a config end to end (what the CLI calls).

Layout (DESIGN.md section 6): ``config.yaml``, ``checkpoints/{last,best}.pt``, ``metrics.jsonl``,
``eval/`` and ``report/``. Training on an existing run directory resumes from its last
checkpoint; a different config is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bayesmeta.calibration.apply import make_calibrator
from bayesmeta.config import (
    build_episodes,
    build_learner,
    build_task_source,
    load_config,
    resolve_config,
    task_kind,
)
from bayesmeta.evaluation import EvaluationResult, evaluate
from bayesmeta.exceptions import CheckpointError, ConfigError
from bayesmeta.inference.base import MetaLearner
from bayesmeta.io import atomic_write_text
from bayesmeta.training import MetaTrainer, TrainResult, config_fingerprint, load_checkpoint

__all__ = ["train_run", "evaluate_run", "load_run_config", "load_learner"]


def load_run_config(run_dir: str | Path) -> dict[str, Any]:
    """The resolved config stored in ``run_dir/config.yaml``."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"run_dir: {str(run_dir)!r} has no config.yaml; is it a bayesmeta run directory?")
    return load_config(path)


def train_run(
    config: dict[str, Any] | str | Path,
    run_dir: str | Path,
    *,
    steps: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Meta-train the config into ``run_dir``, resuming if it already holds a checkpoint.

    Args:
        config: a config dict (resolved here) or a YAML path.
        run_dir: the run directory (created if missing).
        steps: override ``training.steps`` (e.g. to train an existing run further).
        progress: tqdm bars.

    Raises:
        CheckpointError: ``run_dir`` holds a run of a different config.
    """
    cfg = load_config(config) if isinstance(config, (str, Path)) else resolve_config(config)
    if steps is not None:
        cfg["training"]["steps"] = int(steps)
    run = Path(run_dir)
    existing = run / "config.yaml"
    if existing.is_file() and config_fingerprint(load_config(existing)) != config_fingerprint(cfg):
        raise CheckpointError(
            f"run_dir: {str(run)!r} holds a run of a different config; use a new --run-dir, "
            f"or the same config (only training.steps and logging intervals may change)"
        )
    run.mkdir(parents=True, exist_ok=True)
    atomic_write_text(yaml.safe_dump(cfg, sort_keys=False), existing)
    tr = cfg["training"]
    trainer = MetaTrainer(
        build_learner(cfg),
        build_task_source(cfg, "train"),
        steps=tr["steps"],
        meta_batch_size=tr["meta_batch_size"],
        lr=tr["lr"],
        grad_clip=tr["grad_clip"],
        seed=tr["seed"],
        val_episodes=build_episodes(cfg, "val") if tr["val_episodes"] else None,
        val_every=tr["val_every"],
        run_dir=run,
        checkpoint_every=tr["checkpoint_every"],
        log_every=tr["log_every"],
        config=cfg,
        progress=progress,
        max_minutes=tr["max_minutes"],
    )
    return trainer.fit()


def load_learner(run_dir: str | Path, checkpoint: str = "best") -> tuple[MetaLearner, dict[str, Any]]:
    """Rebuild a run's learner from its config and load ``checkpoints/{checkpoint}.pt``.

    Falls back from ``best`` to ``last`` when the run kept no validation-best checkpoint.
    """
    cfg = load_run_config(run_dir)
    ckdir = Path(run_dir) / "checkpoints"
    path = ckdir / f"{checkpoint}.pt"
    if checkpoint == "best" and not path.exists():
        path = ckdir / "last.pt"
    ckpt = load_checkpoint(path, cfg)
    learner = build_learner(cfg)
    try:
        learner.load_state_dict(ckpt["learner"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the config's learner: {e}") from None
    return learner, cfg


def evaluate_run(
    run_dir: str | Path,
    *,
    checkpoint: str = "best",
    n_episodes: int | None = None,
    task_overrides: dict[str, Any] | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    calibrate: str | None = None,
    alpha: float = 0.1,
    score: str | None = None,
) -> EvaluationResult:
    """Evaluate a trained run on its fixed test episodes and write the results.

    Args:
        run_dir: a trained run directory.
        checkpoint: ``"best"`` (validation-best, falling back to last) or ``"last"``.
        n_episodes: override ``evaluation.n_episodes``.
        task_overrides: extra ``evaluation.tasks`` overrides (e.g. ``{"n_way": 20}`` to test a
            5-way-trained ProtoNet 20-way); validated like the config's own.
        out_dir: where to write (default ``run_dir/eval``).
        calibrate: ``"temperature"`` or ``"conformal"``: fit that calibrator on the run's
            validation episodes (``training.val_episodes`` of its config, with the evaluation task
            overrides) and save calibrated metrics beside the raw ones.
        alpha: conformal miscoverage level.
        score: conformal score (default: ``lac`` / ``normalized``).
    """
    learner, cfg = load_learner(run_dir, checkpoint)
    if n_episodes is not None:
        cfg["evaluation"]["n_episodes"] = int(n_episodes)
    if task_overrides:
        cfg["evaluation"]["tasks"] = {**cfg["evaluation"]["tasks"], **task_overrides}
        cfg = resolve_config(cfg)
    episodes = build_episodes(cfg, "test")
    calibrator, cal_episodes = None, None
    if calibrate is not None:
        if not int(cfg["training"]["val_episodes"]):
            raise ConfigError("training.val_episodes: --calibrate fits on the run's validation episodes; got 0 of them")
        options = {"alpha": alpha, "score": score} if calibrate == "conformal" else {}
        calibrator = make_calibrator(calibrate, task_kind(cfg), **options)
        cal_episodes = build_episodes(cfg, "val", evaluation_tasks=True)
    result = evaluate(
        learner, episodes, method=cfg["method"]["name"], progress=progress, seed=cfg["evaluation"]["seed"],
        calibrator=calibrator, calibration_episodes=cal_episodes,
    )
    result.save(Path(out_dir) if out_dir is not None else Path(run_dir) / "eval")
    return result
