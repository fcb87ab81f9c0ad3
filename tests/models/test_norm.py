"""Task-local normalization layers (bayesmeta.models.norm) and Conv4's use of them.

References are computed independently: numpy loops over examples for TaskNorm-I's formula,
torch's own ``BatchNorm2d`` / ``InstanceNorm2d`` for the limiting cases, and
``torch.autograd.gradgradcheck`` (finite differences) for second-order gradients, which the
MAML meta-gradient needs (torch 2.13's ``F.batch_norm`` double backward under ``torch.func`` is
wrong, which is why these layers are written with plain ops).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from bayesmeta.exceptions import BayesMetaError, CheckpointError, ConfigError, ShapeError
from bayesmeta.models import Conv4
from bayesmeta.models.norm import NORMS, BatchStatNorm2d, TaskNorm2d, make_norm

F64 = torch.float64


def _x(g: int = 3, n: int = 5, c: int = 4, hw: int = 5, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    # channel-dependent offsets and scales, so that wrong statistics are visible
    scale = torch.rand(1, 1, c, 1, 1, generator=gen, dtype=F64) * 3 + 0.5
    shift = torch.randn(1, 1, c, 1, 1, generator=gen, dtype=F64) * 2
    return torch.randn(g, n, c, hw, hw, generator=gen, dtype=F64) * scale + shift


def _randomize_affine(m: torch.nn.Module) -> None:
    with torch.no_grad():
        m.weight.normal_()
        m.bias.normal_()


def _tasknorm_numpy(x: np.ndarray, ctx: np.ndarray, a: float, b: float, w: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    """TaskNorm-I (Bronskill et al. 2020, eq. 5-6) written out per task and example."""
    out = np.empty_like(x)
    for g in range(x.shape[0]):
        cx = x[g][ctx[g]]  # [n_ctx, C, H, W]
        mu_c = cx.mean(axis=(0, 2, 3))
        var_c = cx.var(axis=(0, 2, 3))
        alpha = 1.0 / (1.0 + np.exp(-(a * ctx[g].sum() + b)))
        for i in range(x.shape[1]):
            mu_i = x[g, i].mean(axis=(1, 2))
            var_i = x[g, i].var(axis=(1, 2))
            mu = alpha * mu_c + (1 - alpha) * mu_i
            var = alpha * (var_c + (mu_c - mu) ** 2) + (1 - alpha) * (var_i + (mu_i - mu) ** 2)
            xhat = (x[g, i] - mu[:, None, None]) / np.sqrt(var[:, None, None] + eps)
            out[g, i] = xhat * w[:, None, None] + bias[:, None, None]
    return out


@pytest.mark.parametrize("masked", [False, True])
def test_tasknorm_matches_the_papers_formula(masked: bool) -> None:
    x = _x()
    ctx = torch.ones(3, 5, dtype=torch.bool)
    if masked:
        ctx[0, 3:] = False
        ctx[2, 0] = False
    m = TaskNorm2d(4).double()
    _randomize_affine(m)
    with torch.no_grad():
        m.alpha_scale.fill_(0.4)
        m.alpha_offset.fill_(-1.1)
    got = m(x, ctx).detach().numpy()
    want = _tasknorm_numpy(x.numpy(), ctx.numpy(), 0.4, -1.1, m.weight.detach().numpy(), m.bias.detach().numpy(), m.eps)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)  # float64 round-off only


def test_tasknorm_limits_are_batch_norm_on_the_context_and_instance_norm() -> None:
    x = _x(g=1, n=6)
    m = TaskNorm2d(4).double()
    _randomize_affine(m)
    bn = torch.nn.BatchNorm2d(4, track_running_stats=False).double()
    inorm = torch.nn.InstanceNorm2d(4, affine=True).double()
    with torch.no_grad():
        for ref in (bn, inorm):
            ref.weight.copy_(m.weight)
            ref.bias.copy_(m.bias)
        m.alpha_offset.fill_(60.0)  # alpha = 1: the context's batch statistics only
    torch.testing.assert_close(m(x)[0], bn(x[0]), rtol=1e-10, atol=1e-10)
    with torch.no_grad():
        m.alpha_offset.fill_(-60.0)  # alpha = 0: each example's own statistics
    torch.testing.assert_close(m(x)[0], inorm(x[0]), rtol=1e-10, atol=1e-10)


def test_batch_stat_norm_is_torch_batch_norm_per_task_over_its_context() -> None:
    x = _x()
    m = BatchStatNorm2d(4).double()
    _randomize_affine(m)
    ref = torch.nn.BatchNorm2d(4, track_running_stats=False).double()
    with torch.no_grad():
        ref.weight.copy_(m.weight)
        ref.bias.copy_(m.bias)
    # unmasked: each group is one BatchNorm2d call on its own examples
    torch.testing.assert_close(m(x), torch.stack([ref(xg) for xg in x]), rtol=1e-10, atol=1e-10)
    # masked: statistics of the context rows only, applied to every row
    ctx = torch.tensor([[True, True, False, True, False]] * 3)
    got = m(x, ctx)
    for g in range(3):
        var, mean = torch.var_mean(x[g][ctx[g]], dim=(0, 2, 3), unbiased=False, keepdim=True)
        want = (x[g] - mean) / torch.sqrt(var + m.eps) * m.weight.view(1, -1, 1, 1) + m.bias.view(1, -1, 1, 1)
        torch.testing.assert_close(got[g], want, rtol=1e-10, atol=1e-10)


def test_a_query_row_never_changes_another_rows_output() -> None:
    """Non-context rows do not enter any statistic: changing one leaves the others unchanged."""
    x = _x()
    ctx = torch.tensor([[True, True, True, False, False]] * 3)
    for m in (TaskNorm2d(4).double(), BatchStatNorm2d(4).double()):
        y = m(x, ctx)
        x2 = x.clone()
        x2[1, 4] = 100 * torch.randn_like(x2[1, 4])
        y2 = m(x2, ctx)
        torch.testing.assert_close(y2[:, :4], y[:, :4], rtol=0, atol=0)
        torch.testing.assert_close(y2[0], y[0], rtol=0, atol=0)


@pytest.mark.parametrize("cls", [TaskNorm2d, BatchStatNorm2d])
def test_second_order_gradients_match_finite_differences(cls: type[torch.nn.Module]) -> None:
    x = _x(g=2, n=3, c=2, hw=3).requires_grad_()
    ctx = torch.tensor([[True, True, False], [True, False, True]])
    m = cls(2).double()
    _randomize_affine(m)
    params = tuple(p for p in m.parameters())

    def f(xx: torch.Tensor, *ps: torch.Tensor) -> torch.Tensor:
        out = torch.func.functional_call(m, dict(zip([n for n, _ in m.named_parameters()], ps)), (xx, ctx))
        return (out**3).sum()  # a nonlinear read-out, so second derivatives are not trivial

    inputs = (x, *[p.detach().clone().requires_grad_() for p in params])
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5)
    assert torch.autograd.gradgradcheck(f, inputs, eps=1e-6, atol=1e-5)


def test_make_norm_and_conv4_refuse_unknown_norms_listing_the_valid_ones() -> None:
    for bad in ("batchnorm", "Task", ""):
        with pytest.raises(ConfigError, match="norm: expected one of 'task', 'group'"):
            make_norm(bad, 4)
        with pytest.raises(ConfigError, match="norm"):
            Conv4(norm=bad)  # type: ignore[arg-type]
    assert set(NORMS) == {"task", "group", "instance", "layer", "none", "batch"}


@pytest.mark.parametrize("norm", ["task", "batch"])
def test_conv4_context_norms_keep_tasks_apart_and_check_shapes(norm: str) -> None:
    torch.manual_seed(0)
    m = Conv4(hidden=8, norm=norm).double()
    x = torch.rand(3, 4, 1, 28, 28, dtype=F64)
    ctx = torch.tensor([[True, True, False, False]] * 3)
    together = m(x, ctx)
    alone = torch.cat([m(x[t : t + 1], ctx[t : t + 1]) for t in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-10, atol=1e-10)
    with pytest.raises(ShapeError, match="context_mask"):
        m(x, ctx[:, :3])
    with pytest.raises(ShapeError, match="set of examples"):
        m(x[0, 0])  # [C, H, W]: no set dimension


def _v1_state_dict(norm: str) -> dict[str, torch.Tensor]:
    """Weights as bayesmeta 0.1 saved them: conv biases everywhere, no metadata version 2."""
    torch.manual_seed(0)
    # group/layer norms keep conv biases and a norm weight/bias per block: exactly 0.1's key
    # layout for both its "group" and its "batch" (BatchStatNorm2d) Conv4
    new = Conv4(out_features=3, hidden=8, norm="group" if norm == "group" else "layer")
    sd = new.state_dict()
    meta = type(sd)({k: v.clone() for k, v in sd.items()})
    meta._metadata = {k: {"version": 1} for k in getattr(sd, "_metadata", {})}  # type: ignore[attr-defined]
    return meta


def test_old_checkpoints_load_with_a_warning_or_are_refused_with_a_way_forward() -> None:
    old = _v1_state_dict("batch")
    as_batch = Conv4(out_features=3, hidden=8, norm="batch")
    with pytest.warns(UserWarning, match="per task"):
        as_batch.load_state_dict(old)
    torch.testing.assert_close(as_batch.body[1].weight, old["body.1.weight"])
    with pytest.raises(CheckpointError, match="norm='batch'"):
        Conv4(out_features=3, hidden=8, norm="task").load_state_dict(_v1_state_dict("batch"))
    # group norm meant the same in 0.1: loads silently
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Conv4(out_features=3, hidden=8, norm="group").load_state_dict(_v1_state_dict("group"))
    assert issubclass(CheckpointError, BayesMetaError)


def test_new_checkpoints_round_trip_without_warnings() -> None:
    for norm in NORMS:
        a, b = Conv4(out_features=3, hidden=8, norm=norm), Conv4(out_features=3, hidden=8, norm=norm)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            b.load_state_dict(a.state_dict())
        for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(va, vb), k
