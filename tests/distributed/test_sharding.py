"""Sharding a meta-batch over processes, checked in one process (no process group needed).

The multi-process trainer relies on two properties of every learner, tested here for each one in
the contract suite by simulating the processes in turn:

1. the meta-loss is a mean over tasks, so the task-weighted sum of the shards' gradients is the
   whole meta-batch's gradient (a meta-batch of 3 split 2 + 1: weights 2/3 and 1/3);
2. a meta-loss draws from the global RNG a number of times that does not depend on how many
   tasks it gets (per-task noise, :mod:`bayesmeta.inference.task_noise`), so every process's RNG
   stays in the same state and the next step's draws agree.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from bayesmeta.distributed import (
    DistContext,
    check_meta_batch_size,
    init_distributed,
    launched,
    owns_episode,
    shard_batch,
    shard_bounds,
)
from bayesmeta.exceptions import ConfigError, InvalidValueError
from bayesmeta.tasks import TaskBatch
from tests.inference.test_contract import LEARNERS, T, regression_batch


@given(st.integers(0, 200), st.integers(1, 16))
def test_shard_bounds_cover_every_index_once_in_order(n: int, world: int) -> None:
    bounds = [shard_bounds(n, r, world) for r in range(world)]
    covered = [i for start, stop in bounds for i in range(start, stop)]
    assert covered == list(range(n))
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) - min(sizes) <= 1


def test_shard_bounds_refuse_bad_arguments() -> None:
    for n, rank, world in ((-1, 0, 1), (3, 2, 2), (3, 0, 0)):
        with pytest.raises(InvalidValueError, match="shard_bounds"):
            shard_bounds(n, rank, world)


def _ctx(rank: int, world: int) -> DistContext:
    return DistContext(rank, world, rank, "gloo", torch.device("cpu"), owns_group=False)


def test_shard_batch_blocks_and_weights() -> None:
    batch = regression_batch(0)  # T = 3 tasks
    parts = [shard_batch(batch, _ctx(r, 2)) for r in range(2)]
    assert [p.n_tasks for p, _ in parts] == [2, 1]
    assert [w for _, w in parts] == [2 / 3, 1 / 3]
    assert torch.equal(torch.cat([p.query_y for p, _ in parts]), batch.query_y)
    same, w = shard_batch(batch, None)
    assert same is batch and w == 1.0


def test_ragged_query_sets_are_refused_in_several_processes() -> None:
    b = regression_batch(0)
    mask = torch.ones(b.query_x.shape[:2], dtype=torch.bool)
    mask[0, -1] = False
    ragged = TaskBatch(b.support_x, b.support_y, b.query_x, b.query_y, query_mask=mask)
    with pytest.raises(InvalidValueError, match="query_mask"):
        shard_batch(ragged, _ctx(0, 2))
    assert shard_batch(ragged, None)[0] is ragged  # one process: anything goes


def test_meta_batch_smaller_than_the_number_of_processes_is_refused() -> None:
    check_meta_batch_size(4, 4)
    with pytest.raises(ConfigError, match="meta_batch_size"):
        check_meta_batch_size(3, 4)


def test_round_robin_evaluation_batches() -> None:
    owners = [[i for i in range(7) if owns_episode(i, _ctx(r, 3))] for r in range(3)]
    assert owners == [[0, 3, 6], [1, 4], [2, 5]]
    assert all(owns_episode(i, None) for i in range(7))


def test_launch_environment_detection_and_errors() -> None:
    env = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    assert launched(env)
    assert not launched({k: v for k, v in env.items() if k != "MASTER_PORT"})
    with pytest.raises(ConfigError, match="MASTER_PORT"):
        init_distributed("cpu", environ={k: v for k, v in env.items() if k != "MASTER_PORT"})
    with pytest.raises(ConfigError, match="RANK"):
        init_distributed("cpu", environ={**env, "RANK": "5"})
    with pytest.raises(ConfigError, match="backend"):
        init_distributed("cpu", backend="mpi", environ=env)
    with pytest.raises(ConfigError, match="mps"):
        init_distributed("mps", environ=env)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            init_distributed("cuda", environ=env)


def _grads(learner: torch.nn.Module, batch: TaskBatch, seed: int) -> tuple[dict[str, torch.Tensor | None], torch.Tensor]:
    learner.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    learner.meta_loss(batch).loss.backward()
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in learner.named_parameters()}
    return grads, torch.get_rng_state()


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_weighted_shard_gradients_equal_the_meta_batch_gradient(name: str) -> None:
    """Each simulated process starts from the same RNG state, as in a multi-process run."""
    factory, batch_fn = LEARNERS[name]
    torch.manual_seed(0)
    learner = factory().double()
    batch = batch_fn(0).to(dtype=torch.float64)
    assert batch.n_tasks == T == 3
    whole, rng_whole = _grads(learner, batch, seed=5)
    summed: dict[str, torch.Tensor] = {}
    for rank in range(2):
        shard, weight = shard_batch(batch, _ctx(rank, 2))
        grads, rng = _grads(learner, shard, seed=5)
        assert torch.equal(rng, rng_whole), f"{name}: the RNG advanced by an amount that depends on the shard size"
        for n, g in grads.items():
            if g is not None:
                summed[n] = summed.get(n, torch.zeros_like(g)) + weight * g
    scale = max(float(g.abs().max()) for g in whole.values() if g is not None)
    for n, g in whole.items():
        if g is None:
            assert n not in summed, n
            continue
        # float64: the sums differ from the whole batch's only by reassociation, ~1e-15 of the
        # largest gradient (a bias before a norm layer has a gradient of rounding noise only, so
        # the scale is the learner's, not the tensor's); 1e-10 leaves room for iMAML's
        # conjugate-gradient solves, while a wrong weight (2/3 vs 1/2) or a batch-dependent draw
        # is off by percents
        torch.testing.assert_close(summed[n], g, rtol=1e-10, atol=1e-10 * scale, msg=f"{name}: {n}")


def test_trainer_refuses_a_meta_batch_smaller_than_the_number_of_processes() -> None:
    from bayesmeta.inference import MAML
    from bayesmeta.models import MLP
    from bayesmeta.tasks import Sinusoid
    from bayesmeta.training import MetaTrainer

    learner = MAML(MLP(1, 1, hidden=(4,)), task_kind="regression")
    with pytest.raises(ConfigError, match="meta_batch_size"):
        MetaTrainer(learner, Sinusoid(), steps=1, meta_batch_size=1, distributed=_ctx(0, 2))
    # one process in a group of one is a plain run
    assert MetaTrainer(learner, Sinusoid(), steps=1, meta_batch_size=1, distributed=_ctx(0, 1)).distributed is None


def test_commands_other_than_train_and_evaluate_refuse_several_processes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    from bayesmeta.cli import main

    for k, v in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(k, v)
    assert main(["report", str(tmp_path)]) == 2
    assert "report: only train and evaluate run on several processes" in capsys.readouterr().err
