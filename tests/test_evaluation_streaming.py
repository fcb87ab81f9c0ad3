"""evaluate(): streamed episodes, ragged query sizes kept (padded + masked), summary line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bayesmeta.evaluation import evaluate, load_predictions
from bayesmeta.inference import MAML, ProtoNet
from bayesmeta.metrics import task_metrics
from bayesmeta.models import MLP
from bayesmeta.tasks import Sinusoid, TaskBatch, iter_episodes


def _maml() -> MAML:
    torch.manual_seed(0)
    return MAML(MLP(1, 1, hidden=(8,)), inner_lr=0.1, task_kind="regression")


def test_episodes_of_different_query_sizes_keep_every_prediction(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    eps = [Sinusoid(k_shot=3, n_query=q).sample(2, g) for q in (4, 7, 5)]
    res = evaluate(_maml(), eps, progress=False)
    p = res.predictions
    assert p["sample_mean"].shape[1:3] == (6, 7) and p["targets"].shape[:2] == (6, 7)
    mask = p["query_mask"]
    assert mask.sum(1).tolist() == [4, 4, 7, 7, 5, 5]
    # per-task metrics from the saved (padded) predictions equal those computed per episode
    res.save(tmp_path)
    pred, y, m = load_predictions(tmp_path)
    again = task_metrics(pred, y, m)
    for k in ("mse", "nll", "crps"):
        torch.testing.assert_close(again[k].double(), res.per_task[k], rtol=1e-5, atol=1e-6)  # float32 storage


def test_streamed_and_listed_episodes_give_the_same_result() -> None:
    src = Sinusoid(k_shot=3, n_query=4)
    a = evaluate(_maml(), list(iter_episodes(src, 5, seed=2, tasks_per_batch=2)), progress=False)
    b = evaluate(_maml(), iter_episodes(src, 5, seed=2, tasks_per_batch=2), progress=False, total=3)
    assert a.episode_fingerprint == b.episode_fingerprint
    for k in a.per_task:
        assert torch.equal(a.per_task[k], b.per_task[k])
    assert torch.equal(a.predictions["sample_mean"], b.predictions["sample_mean"])
    assert "query_mask" not in a.predictions  # nothing padded, nothing added


def test_progress_leaves_one_summary_line_with_wall_time(capsys: pytest.CaptureFixture[str]) -> None:
    res = evaluate(_maml(), iter_episodes(Sinusoid(k_shot=3, n_query=4), 3, seed=0), progress=True, method="maml")
    err = capsys.readouterr().err
    summary = [ln for ln in err.replace("\r", "\n").splitlines() if ln.startswith("evaluate: maml on 3 tasks in")]
    assert len(summary) == 1 and " s (" in summary[0]
    assert res.wall_seconds > 0


def test_classification_episodes_with_padding_and_masks() -> None:
    torch.manual_seed(0)
    proto = ProtoNet(MLP(4, None, hidden=(8,)))
    def ep(q: int) -> TaskBatch:
        return TaskBatch(torch.randn(1, 4, 4), torch.tensor([[0, 1, 0, 1]]), torch.randn(1, q, 4),
                         torch.arange(q).remainder(2).unsqueeze(0), n_way=2)
    res = evaluate(proto, [ep(2), ep(6)], progress=False)
    assert res.predictions["sample_log_probs"].shape[1:] == (2, 6, 2)
    assert res.predictions["query_mask"].sum().item() == 8
    with pytest.raises(Exception, match="episodes"):
        evaluate(proto, iter([]), progress=False)


def test_task_chunks_do_not_change_the_numbers() -> None:
    src = Sinusoid(k_shot=3, n_query=4)
    whole = evaluate(_maml(), iter_episodes(src, 7, seed=4, tasks_per_batch=4), progress=False, max_tasks_per_call=None)
    chunked = evaluate(_maml(), iter_episodes(src, 7, seed=4, tasks_per_batch=4), progress=False, max_tasks_per_call=3)
    assert whole.episode_fingerprint == chunked.episode_fingerprint
    for k in whole.per_task:
        # the same per-task computation in a smaller batch: equal up to float32 reduction order
        torch.testing.assert_close(whole.per_task[k], chunked.per_task[k], rtol=1e-5, atol=1e-6)
    with pytest.raises(Exception, match="max_tasks_per_call"):
        evaluate(_maml(), iter_episodes(src, 2, seed=4), progress=False, max_tasks_per_call=0)
