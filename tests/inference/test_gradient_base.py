"""The gradient family's one base: one noise model, one option validator, config keys from signatures."""

from __future__ import annotations

import inspect

import pytest
import torch

from bayesmeta.config import METHODS
from bayesmeta.exceptions import ConfigError
from bayesmeta.inference import (
    BMAML,
    IMAML,
    MAML,
    PLATIPUS,
    GradientLearner,
    ParticleLearner,
    Reptile,
)
from bayesmeta.inference.base import constructor_options
from bayesmeta.models import MLP

FAMILY = [MAML, Reptile, IMAML, BMAML, PLATIPUS]


@pytest.mark.parametrize("cls", FAMILY, ids=lambda c: c.__name__)
def test_every_gradient_learner_is_on_the_one_base(cls: type) -> None:
    assert issubclass(cls, GradientLearner)
    learner = cls(MLP(1, 1, hidden=(4,)), task_kind="regression")
    assert learner.support_loss.__func__ is GradientLearner.support_loss  # type: ignore[attr-defined]
    assert type(learner).noise_variance is GradientLearner.noise_variance


@pytest.mark.parametrize("cls", FAMILY, ids=lambda c: c.__name__)
@pytest.mark.parametrize("noise", [True, False, float("inf"), float("nan"), 0.0, -1.0, "fixed", None])
def test_the_same_bad_noise_is_the_same_config_error(cls: type, noise: object) -> None:
    with pytest.raises(ConfigError, match="noise"):
        cls(MLP(1, 1, hidden=(4,)), task_kind="regression", noise=noise)


@pytest.mark.parametrize("cls", FAMILY, ids=lambda c: c.__name__)
def test_the_same_good_noise_means_the_same_variance(cls: type) -> None:
    fixed = cls(MLP(1, 1, hidden=(4,)), task_kind="regression", noise=0.5)
    assert fixed.noise_variance() == pytest.approx(0.25) and fixed.log_noise is None
    learned = cls(MLP(1, 1, hidden=(4,)), task_kind="regression")
    assert float(learned.noise_variance().detach()) == 1.0 and isinstance(learned.log_noise, torch.nn.Parameter)
    assert cls(MLP(1, 1, hidden=(4,)), task_kind="classification").log_noise is None


@pytest.mark.parametrize("cls", FAMILY, ids=lambda c: c.__name__)
@pytest.mark.parametrize("option, value", [("inner_lr", 0.0), ("inner_lr", float("inf")), ("inner_steps", -1),
                                           ("inner_steps", 1.5), ("chunk_size", 0), ("test_inner_steps", True)])
def test_bad_inner_loop_options_are_config_errors(cls: type, option: str, value: object) -> None:
    with pytest.raises(ConfigError, match=option):
        cls(MLP(1, 1, hidden=(4,)), **{option: value})


def test_particle_learner_is_public_and_shared() -> None:
    assert issubclass(BMAML, ParticleLearner) and issubclass(PLATIPUS, ParticleLearner)
    assert ParticleLearner.__module__ == "bayesmeta.inference.particles"


# Ensemble's config section is a schema of its own (base learner, members, seed), built by
# config.build_learner, so it declares config_keys explicitly; every other learner derives them.
DERIVED = sorted(n for n, spec in METHODS.items() if spec.cls.__name__ != "Ensemble")


@pytest.mark.parametrize("name", DERIVED)
def test_config_keys_are_the_constructor_options(name: str) -> None:
    cls = METHODS[name].cls
    params = inspect.signature(cls.__init__).parameters
    expected = tuple(p for p in params if p not in ("self", "model", "backbone"))
    assert cls.config_keys == expected == constructor_options(cls)


@pytest.mark.parametrize("name", ["bmaml", "platipus"])
def test_task_kind_none_leaves_the_regression_noise_out_of_a_classification_loss(name: str) -> None:
    """A particle learner built for either kind keeps a learned regression noise; a classification
    batch must train without it (it used to be fitted as a Gaussian on class labels: a raw shape error)."""
    from bayesmeta.inference import BMAML, PLATIPUS
    from bayesmeta.models import MLP, Conv4
    from tests.inference.test_contract import N_WAY, classification_batch, regression_batch

    def build(model: torch.nn.Module):
        return BMAML(model, n_particles=2) if name == "bmaml" else PLATIPUS(model, n_samples=2)

    torch.manual_seed(0)
    learner = build(Conv4(out_features=N_WAY, hidden=8))
    assert learner.log_noise is not None  # task_kind=None: the noise exists for regression batches
    out = learner.meta_loss(classification_batch(0))
    assert torch.isfinite(out.loss) and "noise_std" not in out.metrics
    out.loss.backward()
    assert learner.log_noise.grad is None
    # the same construction on a regression batch does fit the noise
    reg = build(MLP(1, 1, hidden=(8,)))
    out = reg.meta_loss(regression_batch(0))
    out.loss.backward()
    assert reg.log_noise is not None and reg.log_noise.grad is not None and float(reg.log_noise.grad.abs()) > 0
