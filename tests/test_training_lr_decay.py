"""MetaTrainer's step learning-rate schedule (``lr_decay_every``/``lr_decay``).

The schedule is checked against a second route: a hand-written Adam loop on the same batches
whose learning rate is set by ``torch.optim.lr_scheduler.StepLR``, and its resume against the
uninterrupted run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bayesmeta.config import resolve_config
from bayesmeta.exceptions import BayesMetaError, ConfigError
from bayesmeta.inference import MAML
from bayesmeta.models import MLP
from bayesmeta.tasks import Sinusoid
from bayesmeta.training import MetaTrainer

CONFIG = {"method": {"name": "maml"}, "tasks": {"name": "sinusoid"}, "training": {"lr": 1e-2}}


class Killed(Exception):
    """Stands in for SIGKILL between two steps."""


def _learner() -> MAML:
    torch.manual_seed(3)
    return MAML(MLP(1, 1, hidden=(8,)), inner_lr=0.01, task_kind="regression")


def _trainer(learner: MAML, run_dir: Path | None, steps: int = 9, callback=None) -> MetaTrainer:
    return MetaTrainer(
        learner, Sinusoid(k_shot=5, n_query=5), steps=steps, meta_batch_size=3, lr=1e-2,
        lr_decay_every=3, lr_decay=0.5, grad_clip=None, seed=11, run_dir=run_dir,
        checkpoint_every=2, log_every=1, config=CONFIG, progress=False, callback=callback,
    )  # fmt: skip


def test_lr_at_is_a_step_schedule() -> None:
    t = _trainer(_learner(), None)
    assert [t.lr_at(s) for s in range(7)] == [1e-2] * 3 + [5e-3] * 3 + [2.5e-3]
    constant = MetaTrainer(_learner(), Sinusoid(), steps=1, lr=1e-3, progress=False)
    assert constant.lr_at(10_000) == 1e-3


def test_decayed_training_matches_adam_with_torch_steplr() -> None:
    trained = _learner()
    _trainer(trained, None).fit()

    # second route: the same batches (same generator seed), Adam + StepLR written out by hand
    ref = _learner()
    opt = torch.optim.Adam(ref.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    gen = torch.Generator().manual_seed(11)
    torch.manual_seed(11)
    source = Sinusoid(k_shot=5, n_query=5)
    for _ in range(9):
        batch = source.sample(3, generator=gen)
        opt.zero_grad(set_to_none=True)
        ref.meta_loss(batch).loss.backward()
        opt.step()
        sched.step()
    for (name, a), b in zip(trained.state_dict().items(), ref.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    # and the schedule did something: a constant rate gives other weights
    const = _learner()
    MetaTrainer(const, Sinusoid(k_shot=5, n_query=5), steps=9, meta_batch_size=3, lr=1e-2,
                grad_clip=None, seed=11, progress=False).fit()  # fmt: skip
    assert not torch.equal(next(iter(const.state_dict().values())), next(iter(trained.state_dict().values())))


def test_resumed_decayed_run_reproduces_the_uninterrupted_one(tmp_path: Path) -> None:
    _trainer(_learner(), tmp_path / "a").fit()

    def kill_at_5(step: int, _out) -> None:
        if step == 5:
            raise Killed

    with pytest.raises(Killed):
        _trainer(_learner(), tmp_path / "b", callback=kill_at_5).fit()
    _trainer(_learner(), tmp_path / "b").fit()  # resumes from step 4, inside the second rate

    def losses(d: Path) -> list[float]:
        return [json.loads(ln)["loss"] for ln in (d / "metrics.jsonl").read_text().splitlines() if '"loss"' in ln]

    assert losses(tmp_path / "a") == losses(tmp_path / "b")


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"lr_decay_every": 0}, "lr_decay_every"), ({"lr_decay": 0.0}, "lr_decay"),
     ({"lr_decay": 1.5}, "lr_decay"), ({"lr_decay": True}, "lr_decay")],
)  # fmt: skip
def test_bad_schedule_options_are_refused_by_name(kwargs: dict, name: str) -> None:
    with pytest.raises(BayesMetaError, match=name):
        MetaTrainer(_learner(), Sinusoid(), steps=1, progress=False, **kwargs)


def test_config_validates_and_defaults_the_schedule() -> None:
    cfg = resolve_config({"method": {"name": "maml"}, "tasks": {"name": "sinusoid"}})
    assert cfg["training"]["lr_decay_every"] is None and cfg["training"]["lr_decay"] == 0.5
    with pytest.raises(ConfigError, match="training.lr_decay_every"):
        resolve_config({**CONFIG, "training": {"lr_decay_every": -2}})
    with pytest.raises(ConfigError, match="training.lr_decay"):
        resolve_config({**CONFIG, "training": {"lr_decay": 2.0}})
