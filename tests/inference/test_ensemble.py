"""Ensemble: the mixture predictive by hand, members differ, one seed reproduces the ensemble,
joint training equals independent training of the members, and the YAML route."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from bayesmeta.config import build_learner, resolve_config
from bayesmeta.exceptions import ConfigError, ShapeError
from bayesmeta.inference import MAML, Ensemble, ProtoNet
from bayesmeta.inference.ensemble import mixture
from bayesmeta.inference.platipus import PLATIPUS
from bayesmeta.models import MLP, Conv4
from bayesmeta.predictive import CategoricalPredictive, GaussianPredictive
from bayesmeta.tasks import Sinusoid
from bayesmeta.training import MetaTrainer
from tests.inference.test_contract import classification_batch, regression_batch


def _maml() -> MAML:
    return MAML(MLP(1, 1, hidden=(8,)), inner_steps=1, task_kind="regression")


def test_gaussian_mixture_equals_the_hand_computed_mixture() -> None:
    ens = Ensemble(lambda: PLATIPUS(MLP(1, 1, hidden=(8,)), n_samples=2, task_kind="regression"), n_members=3, seed=0)
    batch = regression_batch(0)
    torch.manual_seed(1)
    pred = ens(batch)
    torch.manual_seed(1)  # the same noise for the members' own predictions, in member order
    parts = [m.predict(m.adapt(batch.support), batch.query_x) for m in ens.members]
    assert isinstance(pred, GaussianPredictive) and pred.n_samples == 6
    y = batch.query_y
    # p(y) = 1/3 sum_k p_k(y), with p_k itself the uniform mixture of member k's 2 samples
    want = torch.logsumexp(torch.stack([p.log_prob(y) for p in parts]), 0) - math.log(3)
    torch.testing.assert_close(pred.log_prob(y), want)
    torch.testing.assert_close(pred.mean, torch.stack([p.mean for p in parts]).mean(0))
    # law of total variance over members
    m = torch.stack([p.mean for p in parts])
    v = torch.stack([p.variance for p in parts])
    torch.testing.assert_close(pred.variance, v.mean(0) + m.var(0, unbiased=False))


def test_categorical_mixture_equals_the_mean_of_member_probabilities() -> None:
    ens = Ensemble(lambda: ProtoNet(Conv4(hidden=8)), n_members=4, seed=3)
    batch = classification_batch(0)
    pred = ens(batch)
    probs = torch.stack([m(batch).probs for m in ens.members]).mean(0)
    assert isinstance(pred, CategoricalPredictive) and pred.n_samples == 4
    torch.testing.assert_close(pred.probs, probs)
    assert float(pred.mutual_information.detach().mean()) > 0  # members disagree: epistemic part > 0


def test_members_differ_and_one_seed_reproduces_the_ensemble() -> None:
    state = torch.get_rng_state()
    a = Ensemble(_maml, n_members=3, seed=7)
    assert torch.equal(torch.get_rng_state(), state)  # building leaves the global RNG alone
    b = Ensemble(_maml, n_members=3, seed=7)
    c = Ensemble(_maml, n_members=3, seed=8)
    vec = lambda m: torch.nn.utils.parameters_to_vector(m.parameters())  # noqa: E731
    w = [vec(m) for m in a.members]
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[1], w[2])
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    assert not torch.equal(vec(a), vec(c))
    # member k is the base learner built under seed + k
    torch.manual_seed(8)
    single = _maml()
    assert torch.equal(vec(single), w[1])


def test_joint_training_equals_training_each_member_alone() -> None:
    src = Sinusoid(k_shot=5, n_query=5)
    kw = {"steps": 4, "meta_batch_size": 3, "lr": 1e-2, "grad_clip": 0.5, "seed": 3, "progress": False}
    ens = Ensemble(_maml, n_members=2, seed=0)
    MetaTrainer(ens, src, **kw).fit()
    for k in range(2):
        torch.manual_seed(k)
        alone = _maml()
        MetaTrainer(alone, src, **kw).fit()
        for (n, p), q in zip(alone.named_parameters(), ens.members[k].parameters(), strict=True):
            # per-member clipping (grad_clip 0.5 is active here) keeps the members independent
            torch.testing.assert_close(p, q, rtol=0, atol=1e-6, msg=n)
    cost = ens.training_cost
    assert cost["members"] == 2 and cost["relative_cost"] == 2.0
    assert cost["parameters"] == 2 * sum(p.numel() for p in ens.members[0].parameters())


def test_yaml_route_and_errors(tmp_path: Path) -> None:
    cfg = resolve_config({
        "method": {"name": "ensemble", "base": {"name": "maml", "inner_lr": 0.05}, "members": 3},
        "model": {"hidden": [8]},
        "tasks": {"name": "sinusoid"},
        "training": {"seed": 4},
    })
    ens = build_learner(cfg)
    assert isinstance(ens, Ensemble) and ens.n_members == 3 and ens.seed == 4
    assert all(isinstance(m, MAML) and m.inner_lr == 0.05 for m in ens.members)
    again = build_learner(cfg)
    assert all(torch.equal(x, y) for x, y in zip(ens.state_dict().values(), again.state_dict().values(), strict=True))
    with pytest.raises(ConfigError, match="method.base"):
        resolve_config({"method": {"name": "ensemble", "members": 3}, "tasks": {"name": "sinusoid"}})
    with pytest.raises(ConfigError, match=r"method.base: unknown key\(s\) 'inner_lrr'"):
        resolve_config({"method": {"name": "ensemble", "base": {"name": "maml", "inner_lrr": 1}}, "tasks": {"name": "sinusoid"}})
    with pytest.raises(ConfigError, match="unknown method.base 'ensemble'"):
        resolve_config({"method": {"name": "ensemble", "base": {"name": "ensemble"}}, "tasks": {"name": "sinusoid"}})
    with pytest.raises(ConfigError, match="method.members"):
        resolve_config({"method": {"name": "ensemble", "base": {"name": "maml"}, "members": 0}, "tasks": {"name": "sinusoid"}})
    assert resolve_config({"method": {"name": "ensemble", "base": {"name": "cnp"}}, "tasks": {"name": "sinusoid"}})["method"]["members"] == 5
    with pytest.raises(ConfigError, match="copies of one learner"):
        Ensemble([_maml(), ProtoNet(Conv4(hidden=4))])
    with pytest.raises(ShapeError, match="sample count"):
        mixture([GaussianPredictive(torch.zeros(1, 2, 3, 1), torch.ones(1, 2, 3, 1)),
                 GaussianPredictive(torch.zeros(2, 2, 3, 1), torch.ones(2, 2, 3, 1))])


def test_cli_trains_and_evaluates_an_ensemble(tmp_path: Path) -> None:
    from bayesmeta.cli import main

    cfg = {
        "method": {"name": "ensemble", "members": 2, "base": {"name": "maml"}},
        "model": {"name": "mlp", "hidden": [8]},
        "tasks": {"name": "sinusoid", "k_shot": 5, "n_query": 5},
        "training": {"steps": 2, "meta_batch_size": 2, "val_episodes": 2, "val_every": 2, "checkpoint_every": 2},
        "evaluation": {"n_episodes": 4, "tasks_per_batch": 2},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / "c.yaml"), "--run-dir", str(tmp_path / "run"), "--no-progress"]) == 0
    assert main(["evaluate", str(tmp_path / "run"), "--no-progress"]) == 0
