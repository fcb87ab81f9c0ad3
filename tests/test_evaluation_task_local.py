"""Evaluation does not depend on how tasks are grouped into calls (issue 9, item 5)."""

from __future__ import annotations

import pytest
import torch

from bayesmeta.evaluation import evaluate
from bayesmeta.exceptions import InvalidValueError
from bayesmeta.inference import ProtoNet
from bayesmeta.inference.latent_np import NP
from bayesmeta.inference.versa import VERSA
from bayesmeta.models import Conv4
from bayesmeta.tasks import FewShotSampler, Sinusoid, fixed_episodes, omniglot


def _omniglot_episodes(tasks_per_batch: int):
    sampler = FewShotSampler(omniglot("test"), n_way=5, k_shot=1, n_query=3)
    return fixed_episodes(sampler, n_episodes=8, seed=11, tasks_per_batch=tasks_per_batch)


@pytest.mark.parametrize("factory", [lambda: ProtoNet(Conv4(hidden=16)), lambda: VERSA(Conv4(hidden=16), n_samples=3)])
def test_per_task_metrics_do_not_depend_on_tasks_per_batch_or_chunking(factory) -> None:
    torch.manual_seed(0)
    learner = factory()
    ref = evaluate(learner, _omniglot_episodes(1), progress=False, max_tasks_per_call=None)
    for tpb, chunk in ((8, None), (8, 3), (4, 1)):
        got = evaluate(learner, _omniglot_episodes(tpb), progress=False, max_tasks_per_call=chunk)
        assert got.n_tasks == ref.n_tasks == 8
        for k, v in ref.per_task.items():
            # float32 convolutions over differently sized batches differ in the last bits only
            torch.testing.assert_close(got.per_task[k], v, rtol=1e-5, atol=1e-6, msg=k)


def test_sampling_regression_learner_is_grouping_independent() -> None:
    torch.manual_seed(0)
    learner = NP(hidden=16, r_dim=16, z_dim=4, n_samples=5)
    src = Sinusoid(k_shot=5, n_query=7)
    a = evaluate(learner, fixed_episodes(src, n_episodes=6, seed=3, tasks_per_batch=6), progress=False, max_tasks_per_call=None)
    b = evaluate(learner, fixed_episodes(src, n_episodes=6, seed=3, tasks_per_batch=1), progress=False)
    for k, v in a.per_task.items():
        torch.testing.assert_close(b.per_task[k], v, rtol=1e-5, atol=1e-6, msg=k)


def test_max_tasks_per_call_is_validated() -> None:
    learner = ProtoNet(Conv4(hidden=8))
    with pytest.raises(InvalidValueError, match="max_tasks_per_call"):
        evaluate(learner, _omniglot_episodes(4), progress=False, max_tasks_per_call=0)
