"""Fake evaluated run directories with synthetic predictions (the format of bayesmeta.evaluation)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from bayesmeta.metrics import aggregate_metrics, task_metrics
from bayesmeta.predictive import CategoricalPredictive, GaussianPredictive

MakeRun = Callable[..., Path]


def write_run(
    root: Path,
    name: str,
    kind: str,
    seed: int = 0,
    temperature: float = 1.0,
    t: int = 12,
    q: int = 20,
    predictions: bool = True,
    mask: bool = False,
    episodes: int | None = 0,
    shift: float = 0.0,
) -> Path:
    """A run directory with config.yaml and eval/{summary.json, per_task.jsonl, predictions.pt}.

    ``episodes`` seeds the tasks (targets) and names their fingerprint: runs with the same
    ``episodes`` are evaluated on the same tasks (``None``: no fingerprint, as older versions
    wrote); ``seed`` seeds the run's predictions; ``shift`` moves the predictions towards the
    targets (a better model, task by task).
    """
    g = torch.Generator().manual_seed(seed)
    ge = torch.Generator().manual_seed(10_000 + (episodes or 0))
    run = root / f"{name}-{seed}"
    (run / "eval").mkdir(parents=True)
    (run / "config.yaml").write_text(f"method:\n  name: {name}\nseed: {seed}\n", encoding="utf-8")
    query_mask = None
    if mask:
        query_mask = torch.ones(t, q, dtype=torch.bool)
        query_mask[::2, q // 2 :] = False
    if kind == "classification":
        y = torch.randint(0, 5, (t, q), generator=ge)
        z = 2.0 * torch.randn(1, t, q, 5, generator=g, dtype=torch.float64)
        z = z + shift * torch.nn.functional.one_hot(y, 5).double()
        members = z + 0.5 * torch.randn(4, t, q, 5, generator=g, dtype=torch.float64)
        pred = CategoricalPredictive(logits=members * temperature)
        blob = {"sample_log_probs": pred.sample_log_probs.float(), "targets": y}
    else:
        y = torch.randn(t, q, 1, generator=ge, dtype=torch.float64)
        mean = y + (1.0 - shift) * torch.randn(1, t, q, 1, generator=g, dtype=torch.float64)
        members = mean + 0.3 * torch.randn(3, t, q, 1, generator=g, dtype=torch.float64)
        pred = GaussianPredictive(members, torch.full((3, t, q, 1), 0.9 / temperature**2, dtype=torch.float64))
        blob = {"sample_mean": pred.sample_mean.float(), "sample_variance": pred.sample_variance.float(), "targets": y.float()}
    if query_mask is not None:
        blob["query_mask"] = query_mask
    per_task = task_metrics(pred, y, query_mask)
    summary = {
        "method": name,
        "task_kind": kind,
        "n_tasks": t,
        "episode_fingerprint": None if episodes is None else f"{kind}-{t}-{q}-episodes{episodes}".ljust(64, "0"),
        "metrics": {k: v.to_dict() for k, v in aggregate_metrics(per_task).items()},
    }
    (run / "eval" / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    lines = [json.dumps({k: float(v[i]) for k, v in per_task.items()}) for i in range(t)]
    (run / "eval" / "per_task.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if predictions:
        torch.save(blob, run / "eval" / "predictions.pt")
    return run


@pytest.fixture
def make_run(tmp_path: Path) -> MakeRun:
    def make(name: str, kind: str = "classification", **kw: object) -> Path:
        return write_run(tmp_path / "runs", name, kind, **kw)  # type: ignore[arg-type]

    return make
