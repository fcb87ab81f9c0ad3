"""fixed_episodes: the same seed gives the same tasks, and the global RNG is left alone."""

from __future__ import annotations

import pytest
import torch

from bayesmeta.exceptions import InvalidValueError
from bayesmeta.tasks import (
    FewShotSampler,
    LabelledDataset,
    LinearGaussian,
    Sinusoid,
    TaskBatch,
    fixed_episodes,
)


def same(a: list[TaskBatch], b: list[TaskBatch]) -> bool:
    fields = ("support_x", "support_y", "query_x", "query_y")
    return len(a) == len(b) and all(
        torch.equal(getattr(x, f), getattr(y, f)) for x, y in zip(a, b, strict=True) for f in fields
    )


def small_sampler() -> FewShotSampler:
    images = torch.rand(60, 1, 5, 5, generator=torch.Generator().manual_seed(0))
    return FewShotSampler(LabelledDataset(images, torch.arange(60) % 12), n_way=3, k_shot=2, n_query=2)


@pytest.mark.parametrize(
    "source", [Sinusoid(noise_std=0.1), LinearGaussian(n_features=10), small_sampler()], ids=str
)
def test_fixed_episodes_reproducible(source: object) -> None:
    a = fixed_episodes(source, n_episodes=12, seed=11, tasks_per_batch=3)
    b = fixed_episodes(source, n_episodes=12, seed=11, tasks_per_batch=3)
    c = fixed_episodes(source, n_episodes=12, seed=12, tasks_per_batch=3)
    assert len(a) == 4 and all(e.n_tasks == 3 for e in a)
    assert same(a, b)
    assert not same(a, c)
    # asking for more episodes extends the list without changing the first ones
    assert same(a, fixed_episodes(source, n_episodes=18, seed=11, tasks_per_batch=3)[:4])
    # distinct episodes within one list
    assert not torch.equal(a[0].support_x, a[1].support_x)
    # the batching does not change the tasks: 12 tasks one by one == the same 12 in fours
    ones = fixed_episodes(source, n_episodes=12, seed=11, tasks_per_batch=1)
    fours = fixed_episodes(source, n_episodes=12, seed=11, tasks_per_batch=5)
    assert [e.n_tasks for e in fours] == [5, 5, 2]
    for f in ("support_x", "query_y"):
        assert torch.equal(torch.cat([getattr(e, f) for e in ones]), torch.cat([getattr(e, f) for e in fours]))


def test_fixed_episodes_leave_global_rng_alone() -> None:
    state = torch.get_rng_state()
    fixed_episodes(Sinusoid(), n_episodes=3, seed=0)
    assert torch.equal(state, torch.get_rng_state())


def test_fixed_episodes_errors() -> None:
    with pytest.raises(InvalidValueError, match="n_episodes"):
        fixed_episodes(Sinusoid(), n_episodes=0, seed=0)
    with pytest.raises(InvalidValueError, match="tasks_per_batch"):
        fixed_episodes(Sinusoid(), n_episodes=1, seed=0, tasks_per_batch=0)
    with pytest.raises(InvalidValueError, match="source"):
        fixed_episodes(object(), n_episodes=1, seed=0)  # type: ignore[arg-type]


def test_concat_tasks_stacks_fields_and_fills_missing_masks() -> None:
    from bayesmeta.exceptions import ShapeError
    from bayesmeta.tasks import Sinusoid, TaskBatch, concat_tasks

    g = torch.Generator().manual_seed(0)
    a = Sinusoid(k_shot=4, n_query=3).sample(2, g)
    b0 = Sinusoid(k_shot=4, n_query=3).sample(1, g)
    smask = torch.tensor([[True, True, False, False]])
    b = TaskBatch(b0.support_x, b0.support_y, b0.query_x, b0.query_y, support_mask=smask)
    c = concat_tasks([a, b])
    assert c.n_tasks == 3
    for f in ("support_x", "support_y", "query_x", "query_y"):
        assert torch.equal(getattr(c, f), torch.cat([getattr(a, f), getattr(b, f)])), f
    # a batch without a mask counts as all-present; no query mask anywhere stays None
    assert torch.equal(c.support_mask, torch.tensor([[True] * 4, [True] * 4, [True, True, False, False]]))
    assert c.query_mask is None
    assert concat_tasks([a]) is a
    other = Sinusoid(k_shot=5, n_query=3).sample(1, g)
    with pytest.raises(ShapeError, match="batches: cannot stack"):
        concat_tasks([a, other])
