"""DiagonalGaussianPrior: density, reparameterized sampling, prior functions, shape checks."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call

from bayesmeta.exceptions import InvalidValueError, ShapeError
from bayesmeta.models import MLP
from bayesmeta.priors import DiagonalGaussianPrior

F64 = torch.float64


def _prior(std: float = 0.3, hidden: tuple[int, ...] = (5,)) -> DiagonalGaussianPrior:
    torch.manual_seed(0)
    return DiagonalGaussianPrior(MLP(2, 3, hidden=hidden).double(), init_std=std)


def test_mean_is_the_backbone_and_parameters_are_mean_plus_log_var() -> None:
    prior = _prior()
    for (n, p), (_, q) in zip(prior.mean.items(), prior.model.named_parameters(), strict=True):
        assert p is q, n
    names = {n for n, _ in prior.named_parameters()}
    assert names == {f"model.{n}" for n in prior.names} | {f"log_var.{n.replace('.', '__')}" for n in prior.names}
    assert all(torch.allclose(v, torch.full_like(v, 0.09)) for v in prior.variance.values())
    assert prior.n_params == sum(p.numel() for p in prior.model.parameters())


def test_log_prob_matches_torch_distributions_with_batch_dims() -> None:
    prior = _prior()
    with torch.no_grad():
        for v in prior.log_var.values():
            v.uniform_(-2.0, 1.0)  # distinct variances per entry
    g = torch.Generator().manual_seed(1)
    params = {n: torch.randn(4, 2, *p.shape, generator=g, dtype=F64) for n, p in prior.mean.items()}
    ref = sum(
        torch.distributions.Normal(prior.mean[n], prior.stddev[n]).log_prob(params[n]).flatten(2).sum(-1)
        for n in params
    )
    torch.testing.assert_close(prior.log_prob(params), ref)
    single = {n: v[0, 0] for n, v in params.items()}
    torch.testing.assert_close(prior.log_prob(single), ref[0, 0])


def test_sample_moments_and_reparameterized_gradients() -> None:
    prior = _prior(std=0.5)
    draws = prior.sample(20000, generator=torch.Generator().manual_seed(2))
    for n, mu in prior.mean.items():
        assert draws[n].shape == (20000, *mu.shape)
        # 5 standard errors of the mean / of the standard deviation, entrywise
        assert ((draws[n].mean(0) - mu).abs() < 5 * 0.5 / math.sqrt(20000)).all(), n
        assert ((draws[n].std(0) - 0.5).abs() < 5 * 0.5 / math.sqrt(2 * 20000)).all(), n
    small = prior.sample(3)
    sum((v**2).sum() for v in small.values()).backward()
    for name, p in prior.named_parameters():
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), name


def test_sampling_is_seeded() -> None:
    prior = _prior()
    a = prior.sample(4, torch.Generator().manual_seed(3))
    b = prior.sample(4, torch.Generator().manual_seed(3))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sample_functions_equal_a_loop_over_draws() -> None:
    prior = _prior()
    x = torch.randn(7, 2, dtype=F64)
    f = prior.sample_functions(x, 5, generator=torch.Generator().manual_seed(4))
    assert f.shape == (5, 7, 3)
    draws = prior.sample(5, generator=torch.Generator().manual_seed(4))
    for i in range(5):
        ref = functional_call(prior.model, {k: v[i] for k, v in draws.items()}, (x,))
        torch.testing.assert_close(f[i], ref)


def test_prior_functions_of_a_linear_model_have_the_analytic_variance() -> None:
    """y = w x + b with w, b ~ N(mu, s^2): Var[y(x)] = s^2 (x^2 + 1)."""
    torch.manual_seed(5)
    prior = DiagonalGaussianPrior(MLP(1, 1, hidden=()).double(), init_std=0.7)
    x = torch.linspace(-2, 2, 5, dtype=F64)[:, None]
    with torch.no_grad():
        f = prior.sample_functions(x, 40000, generator=torch.Generator().manual_seed(6))[..., 0]
    var = 0.49 * (x[:, 0] ** 2 + 1)
    mean = prior.model(x)[:, 0].detach()
    assert ((f.mean(0) - mean).abs() < 5 * (var / 40000).sqrt()).all()
    assert ((f.var(0) / var - 1).abs() < 5 * math.sqrt(2 / 40000)).all()


# ------------------------------------------------------------------------------ bad input
def test_params_that_do_not_match_the_backbone_raise() -> None:
    prior = _prior()
    good = {n: p.detach().clone() for n, p in prior.mean.items()}
    with pytest.raises(ShapeError, match="missing"):
        prior.log_prob({k: v for k, v in good.items() if k != "head.bias"})
    with pytest.raises(ShapeError, match="unexpected"):
        prior.log_prob({**good, "extra": torch.zeros(1)})
    with pytest.raises(ShapeError, match="head.weight"):
        prior.log_prob({**good, "head.weight": torch.zeros(3, 4, dtype=F64)})
    with pytest.raises(ShapeError, match="batch shape"):
        prior.log_prob({**good, "head.bias": torch.zeros(2, 3, dtype=F64)})
    with pytest.raises(ShapeError):
        prior.check_params([1, 2])  # type: ignore[arg-type]
    other = DiagonalGaussianPrior(MLP(2, 3, hidden=(6,)))
    with pytest.raises(ShapeError):
        other.log_prob(good)


@pytest.mark.parametrize("std", [0.0, -1.0, float("nan"), float("inf"), True])
def test_bad_init_std_raises(std: float) -> None:
    with pytest.raises(InvalidValueError, match="init_std"):
        DiagonalGaussianPrior(MLP(1, 1), init_std=std)


def test_bad_model_and_inputs_raise() -> None:
    with pytest.raises(InvalidValueError, match="model"):
        DiagonalGaussianPrior("mlp")  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError, match="no parameters"):
        DiagonalGaussianPrior(torch.nn.ReLU())
    prior = _prior()
    with pytest.raises(InvalidValueError, match="n"):
        prior.sample(0)
    with pytest.raises(ShapeError, match="x"):
        prior.sample_functions(torch.tensor(1.0), 3)
