"""The pure Stein update: kernel, direction, batched steps, and agreement with pyro.infer.SVGD."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch

from bayesmeta.exceptions import BayesMetaError, InvalidValueError, ShapeError
from bayesmeta.inference.svgd import (
    batched_svgd_steps,
    flatten_particles,
    median_bandwidth,
    rbf_kernel,
    stein_update,
    svgd_direction,
    svgd_steps,
    unflatten_particles,
)

F64 = torch.float64
MU = torch.tensor([1.0, -1.0], dtype=F64)
COV = torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=F64)
PREC = torch.linalg.inv(COV)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Many tiny ops: one thread avoids oversubscription on a busy 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _score(p: torch.Tensor) -> torch.Tensor:
    """grad log N(p; MU, COV), ``[M, 2]``."""
    return -(p - MU) @ PREC


def _init(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # deliberately off-target and too narrow, so that agreement is earned
    return torch.randn(n, 2, generator=g, dtype=F64) * 0.5 + torch.tensor([-2.0, 2.0], dtype=F64)


def _cov_tol(n: int, k: float = 3.0) -> torch.Tensor:
    """k Monte Carlo standard errors of a sample covariance of n Gaussian draws, ``[2, 2]``."""
    d = torch.diagonal(COV)
    return k * torch.sqrt((d[:, None] * d[None, :] + COV**2) / n)


# ------------------------------------------------------------------------------ kernel
def test_kernel_and_summed_gradient_match_autograd() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 4, generator=g, dtype=F64)
    h = 0.7
    k, grad_k = rbf_kernel(x, h)
    direct = torch.exp(-((x[:, None] - x[None]) ** 2).sum(-1) / h)
    torch.testing.assert_close(k, direct, rtol=1e-12, atol=1e-12)
    for i in range(6):
        xj = x.clone().requires_grad_()
        kij = torch.exp(-((xj - x[i]) ** 2).sum(-1) / h)  # k(x_j, x_i), x_i held fixed
        (g_first,) = torch.autograd.grad(kij.sum(), xj)
        torch.testing.assert_close(grad_k[i], g_first.sum(0), rtol=1e-10, atol=1e-12)


def test_median_heuristic_is_med_sq_over_log_m_and_detached() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(7, 3, generator=g, dtype=F64, requires_grad=True)
    h = median_bandwidth(x)
    d2 = torch.cdist(x.detach(), x.detach()) ** 2
    iu = torch.triu_indices(7, 7, 1)
    expected = torch.sort(d2[iu[0], iu[1]]).values[(21 - 1) // 2] / math.log(7)
    assert not h.requires_grad
    torch.testing.assert_close(h, expected, rtol=1e-10, atol=0)
    # the heuristic is what rbf_kernel uses when no bandwidth is given
    torch.testing.assert_close(rbf_kernel(x, None)[0], rbf_kernel(x, float(h))[0])


def test_one_particle_direction_is_exactly_the_score() -> None:
    x = torch.tensor([[0.3, -1.2]], dtype=F64)
    s = torch.tensor([[2.0, 5.0]], dtype=F64)
    k, grad_k = rbf_kernel(x)
    assert torch.equal(k, torch.ones(1, 1, dtype=F64)) and torch.equal(grad_k, torch.zeros_like(x))
    assert torch.equal(svgd_direction(x, s), s)
    assert torch.equal(svgd_direction(x, s, normalize=True, temperature=3.0), s)


def test_temperature_scales_the_direction_of_the_untempered_target() -> None:
    x = _init(8)
    tau = 0.3
    torch.testing.assert_close(
        svgd_direction(x, tau * _score(x), bandwidth=0.9, temperature=tau),
        tau * svgd_direction(x, _score(x), bandwidth=0.9),
    )


def test_identical_particles_do_not_divide_by_zero() -> None:
    x = torch.ones(4, 3, dtype=F64)
    d = svgd_direction(x, torch.ones(4, 3, dtype=F64))
    assert torch.isfinite(d).all()
    torch.testing.assert_close(d, torch.ones(4, 3, dtype=F64))  # K = 1, no repulsion


# -------------------------------------------------------------- convergence to a target
def test_long_run_recovers_a_correlated_gaussian() -> None:
    n = 200
    p = _init(n)
    for _ in range(1000):
        p = p + 0.2 * svgd_direction(p, _score(p))
    assert (p.mean(0) - MU).abs().max() < 0.05
    cov = torch.cov(p.T)
    assert ((cov - COV).abs() < _cov_tol(n)).all(), cov
    # the repulsion is what keeps the spread: without it the particles collapse onto the mode
    q = _init(n)
    for _ in range(500):
        q = q + 0.1 * _score(q)
    assert torch.cov(q.T).diagonal().max() < 1e-3


def test_normalized_direction_has_the_same_fixed_point() -> None:
    n = 200
    p = _init(n)
    for _ in range(1000):
        p = p + 0.05 * svgd_direction(p, _score(p), normalize=True)
    assert (p.mean(0) - MU).abs().max() < 0.05
    assert ((torch.cov(p.T) - COV).abs() < _cov_tol(n)).all()


def test_agrees_with_pyro_svgd() -> None:
    """Same target, particles, initialization, optimizer (Adam) and number of steps."""
    import pyro
    import pyro.distributions as dist
    from pyro.infer import SVGD, RBFSteinKernel
    from pyro.optim import Adam
    n, steps, lr = 100, 500, 0.1

    def model() -> None:
        pyro.sample("x", dist.MultivariateNormal(MU, COV))

    init = _init(n, seed=3)
    pyro.clear_param_store()
    try:
        svgd = SVGD(model, RBFSteinKernel(), Adam({"lr": lr}), num_particles=n, max_plate_nesting=0, mode="multivariate")
        pyro.param("svgd_particles", init.clone().reshape(-1))  # pyro stores particles flat
        for _ in range(steps):
            svgd.step()
        theirs = svgd.get_named_particles()["x"].detach()
    finally:
        pyro.clear_param_store()

    p = init.clone().requires_grad_()
    opt = torch.optim.Adam([p], lr=lr)
    for _ in range(steps):
        p.grad = -svgd_direction(p.detach(), _score(p.detach()))
        opt.step()
    ours = p.detach()

    mean_tol = 3 * torch.sqrt(torch.diagonal(COV) / n)
    for x in (ours, theirs):
        assert ((x.mean(0) - MU).abs() < mean_tol).all()
        assert ((torch.cov(x.T) - COV).abs() < _cov_tol(n)).all()
    assert ((ours.mean(0) - theirs.mean(0)).abs() < mean_tol).all()
    assert ((torch.cov(ours.T) - torch.cov(theirs.T)).abs() < _cov_tol(n)).all()


def _fixed_rbf(h: float):
    """Pyro's RBF Stein kernel with one fixed bandwidth for every dimension.

    Pyro's heuristic is per dimension (``median_d / log(M + 1)``) where ours is one bandwidth
    from the full distance (``med^2 / log M``, BMAML's); with the bandwidth fixed, the two
    updates are the same formula and must agree to round-off. (Built in a function so that
    collecting this file does not import Pyro.)
    """
    from pyro.infer import RBFSteinKernel

    class _FixedRBF(RBFSteinKernel):
        def _bandwidth(self, norm_sq: torch.Tensor) -> torch.Tensor:
            return torch.full(norm_sq.shape[-1:], h, dtype=norm_sq.dtype)

    return _FixedRBF()


@pytest.mark.parametrize("m", [2, 5, 10])
def test_stein_update_equals_pyro_svgd_steps_exactly(m: int) -> None:
    """Three SGD steps of pyro.infer.SVGD against three of our stein_update / svgd_steps (BMAML's path)."""
    import pyro
    import pyro.distributions as dist
    from pyro.infer import SVGD
    lr, h, steps = 0.05, 0.7, 3

    def model() -> None:
        pyro.sample("x", dist.MultivariateNormal(MU, COV))

    init = _init(m, seed=m)
    pyro.clear_param_store()
    try:
        svgd = SVGD(model, _fixed_rbf(h), pyro.optim.SGD({"lr": lr}), num_particles=m, max_plate_nesting=0,
                    mode="multivariate")
        pyro.param("svgd_particles", init.clone().reshape(-1))
        for _ in range(steps):
            svgd.step()
        theirs = svgd.get_named_particles()["x"].detach()
    finally:
        pyro.clear_param_store()
    ours = {"x": init.clone()}
    for _ in range(steps):
        ours = stein_update(ours, {"x": _score(ours["x"])}, lr, bandwidth=h)
    # float64, a few dozen flops per entry in another order: ~1e-15; 1e-12 leaves margin
    torch.testing.assert_close(ours["x"], theirs, rtol=0, atol=1e-12)
    # and the batched inner loop BMAML runs gives the same particles
    target = lambda p, x, y, mask: -0.5 * ((p["x"] - MU) @ PREC * (p["x"] - MU)).sum()  # noqa: E731
    dummy = torch.zeros(1, 1, 1, dtype=F64)
    batched = batched_svgd_steps(target, {"x": init[None].clone()}, dummy, dummy, torch.ones(1, 1, dtype=torch.bool),
                                 steps, lr, bandwidth=h)
    torch.testing.assert_close(batched["x"][0], theirs, rtol=0, atol=1e-12)
    # svgd_direction is the same update
    torch.testing.assert_close(init + lr * svgd_direction(init, _score(init), bandwidth=h),
                               stein_update({"x": init}, {"x": _score(init)}, lr, bandwidth=h)["x"], rtol=0, atol=1e-14)


# --------------------------------------------------------------- batched, differentiable
def _quadratic_target(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """A per-task Gaussian log density in (w, b): data enter as the centre."""
    c = (x * m[:, None]).sum(0) / m.sum()
    return -0.5 * ((p["w"] - c) ** 2).sum() - 0.5 * (p["b"] - y.mean()) ** 2 * 2.0


def test_batched_steps_match_a_per_task_loop() -> None:
    g = torch.Generator().manual_seed(4)
    t, m, s = 3, 5, 4
    parts = {"w": torch.randn(t, m, 2, generator=g, dtype=F64), "b": torch.randn(t, m, generator=g, dtype=F64)}
    x = torch.randn(t, s, 2, generator=g, dtype=F64)
    y = torch.randn(t, s, generator=g, dtype=F64)
    mask = torch.ones(t, s, dtype=torch.bool)
    mask[1, 2:] = False
    temp = torch.tensor([1.0, 0.5, 2.0], dtype=F64)
    out = batched_svgd_steps(_quadratic_target, parts, x, y, mask, 3, 0.2, temperature=temp, chunk_size=2)
    for i in range(t):
        ref = svgd_steps(_quadratic_target, {k: v[i] for k, v in parts.items()}, x[i], y[i], mask[i], 3, 0.2,
                         temperature=float(temp[i]))
        for k in parts:
            torch.testing.assert_close(out[k][i], ref[k], rtol=1e-12, atol=1e-12)


def test_steps_are_differentiable_second_order() -> None:
    """gradcheck through 2 SVGD steps (fixed bandwidth: the heuristic is detached on purpose)."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4, 2, generator=g, dtype=F64)
    y = torch.randn(4, generator=g, dtype=F64)
    mask = torch.ones(4, dtype=torch.bool)

    def target(p: dict[str, torch.Tensor], xx: torch.Tensor, yy: torch.Tensor, mm: torch.Tensor) -> torch.Tensor:
        return -((xx @ p["w"] - yy) ** 2).mean() - 0.1 * (p["w"] ** 2).sum()

    def f(w0: torch.Tensor) -> torch.Tensor:
        return svgd_steps(target, {"w": w0}, x, y, mask, 2, 0.3, bandwidth=1.5)["w"]

    w0 = torch.randn(3, 2, generator=g, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (w0,))


def test_flatten_roundtrip() -> None:
    p = {"a": torch.randn(3, 2, 2), "b": torch.randn(3, 5)}
    flat = flatten_particles(p)
    assert flat.shape == (3, 9)
    back = unflatten_particles(flat, p)
    assert all(torch.equal(back[k], p[k]) for k in p)


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "particles,err",
    [
        (torch.zeros(0, 3), InvalidValueError),  # M < 1
        (torch.zeros(3), ShapeError),
        (torch.tensor([[0.0, float("nan")], [1.0, 1.0]]), InvalidValueError),
        (torch.tensor([[0.0, float("inf")], [1.0, 1.0]]), InvalidValueError),
    ],
)
def test_bad_particles_raise(particles: torch.Tensor, err: type[BayesMetaError]) -> None:
    with pytest.raises(err, match="particles"):
        rbf_kernel(particles)
    with pytest.raises(err, match="particles"):
        svgd_direction(particles, torch.zeros_like(particles))


@pytest.mark.parametrize("bandwidth", [0.0, -1.0, float("nan"), float("inf"), torch.tensor(-0.5)])
def test_non_positive_bandwidth_raises(bandwidth: float) -> None:
    x = torch.randn(4, 2)
    with pytest.raises(InvalidValueError, match="bandwidth"):
        rbf_kernel(x, bandwidth)
    with pytest.raises(InvalidValueError, match="bandwidth"):
        svgd_direction(x, x, bandwidth=bandwidth)


def test_mismatched_scores_and_bad_temperature_raise() -> None:
    x = torch.randn(4, 2)
    with pytest.raises(ShapeError, match="log_prob_grads"):
        svgd_direction(x, torch.zeros(4, 3))
    with pytest.raises(InvalidValueError, match="log_prob_grads"):
        svgd_direction(x, torch.full((4, 2), float("nan")))
    with pytest.raises(InvalidValueError, match="temperature"):
        svgd_direction(x, x, temperature=0.0)
