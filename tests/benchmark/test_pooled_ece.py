"""``pooled_ece``: the benchmark records' pooled ECE, checked against torchmetrics on the mixture
probabilities computed by hand, and against the script that reads it back from a saved evaluation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bayesmeta.benchmark import pooled_ece

REPO = Path(__file__).resolve().parents[2]


def _predictions(seed: int = 0, m: int = 4, t: int = 6, q: int = 20, c: int = 5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = 2.0 * torch.randn(m, t, q, c, generator=g, dtype=torch.float64)
    return {"sample_log_probs": torch.log_softmax(logits, -1), "targets": torch.randint(0, c, (t, q), generator=g)}


def _reference(lp: torch.Tensor, y: torch.Tensor, keep: torch.Tensor | None = None) -> float:
    from torchmetrics.functional.classification import multiclass_calibration_error

    probs = lp.exp().mean(0)  # the uniform mixture over members, averaged in probability space
    p, yy = probs.reshape(-1, probs.shape[-1]), y.reshape(-1)
    if keep is not None:
        p, yy = p[keep.reshape(-1)], yy[keep.reshape(-1)]
    # torchmetrics bins float32 confidences: round ours the same way so both bin the same numbers
    p = p.float().double()
    return float(multiclass_calibration_error(p, yy, num_classes=p.shape[-1], n_bins=15, norm="l1"))


def test_pooled_ece_is_torchmetrics_on_the_mixture_of_all_queries() -> None:
    pred = _predictions()
    ours = pooled_ece(pred)
    assert ours is not None
    assert ours == pytest.approx(_reference(pred["sample_log_probs"], pred["targets"]), abs=1e-6)
    # pooling is not the per-task mean: the two differ on these predictions
    from bayesmeta.metrics import ece

    per_task = ece(pred["sample_log_probs"].exp().mean(0), pred["targets"], 15).mean()
    assert abs(float(per_task) - ours) > 1e-3


def test_pooled_ece_leaves_out_masked_queries() -> None:
    pred = _predictions(seed=1)
    keep = torch.ones(6, 20, dtype=torch.bool)
    keep[2, 5:] = False
    keep[4, :3] = False
    pred_masked = dict(pred, query_mask=keep)
    # padding that would change the answer if it were counted: confident and wrong
    pred_masked["sample_log_probs"] = pred["sample_log_probs"].clone()
    pred_masked["sample_log_probs"][:, ~keep] = torch.log_softmax(
        torch.tensor([30.0, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64), -1
    )
    pred_masked["targets"] = pred["targets"].masked_fill(~keep, 1)
    ours = pooled_ece(pred_masked)
    assert ours == pytest.approx(_reference(pred["sample_log_probs"], pred["targets"], keep), abs=1e-6)


def test_pooled_ece_is_none_for_regression_predictions() -> None:
    assert pooled_ece({"sample_mean": torch.zeros(1, 2, 3, 1), "targets": torch.zeros(2, 3, 1)}) is None


def test_the_script_reads_a_saved_evaluation(tmp_path: Path) -> None:
    pred = _predictions(seed=2)
    torch.save(pred, tmp_path / "predictions.pt")
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "pooled_ece.py"), str(tmp_path)],
        capture_output=True, text=True, check=True, cwd=REPO,
    )  # fmt: skip
    got = json.loads(out.stdout)[str(tmp_path)]
    assert got == {"pooled_ece": pooled_ece(pred), "n_tasks": 6}
