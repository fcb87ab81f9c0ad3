"""The batched MAML meta-gradient against independent per-task computations (float64)."""

from __future__ import annotations

import higher
import pytest
import torch

from bayesmeta.inference import MAML
from bayesmeta.models import MLP, Conv4
from bayesmeta.tasks import TaskBatch

RTOL = 1e-6  # the tolerance; both routes are exact float64 arithmetic in other orders


def _regression_batch(t: int = 5, s: int = 10, q: int = 7, seed: int = 0) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    x = lambda n: torch.rand(t, n, 1, generator=g, dtype=torch.float64) * 10 - 5  # noqa: E731
    sx, qx = x(s), x(q)
    amp = torch.rand(t, 1, 1, generator=g, dtype=torch.float64) * 4.9 + 0.1
    ph = torch.rand(t, 1, 1, generator=g, dtype=torch.float64) * 3.14
    return TaskBatch(sx, amp * torch.sin(sx - ph), qx, amp * torch.sin(qx - ph))


def _rel_err(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    num = torch.sqrt(sum(((a[k] - b[k]) ** 2).sum() for k in a))
    den = torch.sqrt(sum((b[k] ** 2).sum() for k in b))
    return float(num / den)


def _batched_grads(learner: MAML, batch: TaskBatch) -> dict[str, torch.Tensor]:
    learner.zero_grad()
    out = learner.meta_loss(batch)
    names = [n for n in learner.adapted_names]
    grads = torch.autograd.grad(out.loss, [dict(learner.model.named_parameters())[n] for n in names])
    return {"model." + n: g for n, g in zip(names, grads)}


def _higher_grads(model: torch.nn.Module, batch: TaskBatch, lr: float, steps: int) -> dict[str, torch.Tensor]:
    """Per-task loop with `higher`'s differentiable optimizer: an independent implementation."""
    params = list(model.parameters())
    total = [torch.zeros_like(p) for p in params]
    inner_opt = torch.optim.SGD(model.parameters(), lr=lr)
    for t in range(batch.n_tasks):
        with higher.innerloop_ctx(model, inner_opt, copy_initial_weights=False) as (fmodel, diffopt):
            for _ in range(steps):
                diffopt.step(((fmodel(batch.support_x[t]) - batch.support_y[t]) ** 2).mean())
            qloss = ((fmodel(batch.query_x[t]) - batch.query_y[t]) ** 2).mean() / batch.n_tasks
            for acc, g in zip(total, torch.autograd.grad(qloss, params)):
                acc += g
    return {"model." + n: g for (n, _), g in zip(model.named_parameters(), total)}


def _autograd_loop_grads(
    model: torch.nn.Module, batch: TaskBatch, lr: float, steps: int, first_order: bool
) -> dict[str, torch.Tensor]:
    """Per-task loop with torch.autograd.grad(create_graph=...) and torch.func.functional_call."""
    names = [n for n, _ in model.named_parameters()]
    theta = [p for _, p in model.named_parameters()]
    total = [torch.zeros_like(p) for p in theta]
    for t in range(batch.n_tasks):
        phi = list(theta)
        for _ in range(steps):
            pred = torch.func.functional_call(model, dict(zip(names, phi)), (batch.support_x[t],))
            loss = ((pred - batch.support_y[t]) ** 2).mean()
            g = torch.autograd.grad(loss, phi, create_graph=not first_order)
            phi = [p - lr * (gi.detach() if first_order else gi) for p, gi in zip(phi, g)]
        pred = torch.func.functional_call(model, dict(zip(names, phi)), (batch.query_x[t],))
        qloss = ((pred - batch.query_y[t]) ** 2).mean() / batch.n_tasks
        if first_order:
            # FOMAML: the query gradient at phi, applied to theta as if d(phi)/d(theta) = I.
            gs = torch.autograd.grad(qloss, phi)
        else:
            gs = torch.autograd.grad(qloss, theta)
        for acc, g in zip(total, gs):
            acc += g
    return {"model." + n: g for n, g in zip(names, total)}


@pytest.mark.parametrize("steps", [1, 3])
def test_second_order_meta_gradient_matches_higher(steps: int) -> None:
    torch.manual_seed(0)
    model = MLP(1, 1, hidden=(40, 40)).double()
    learner = MAML(model, inner_lr=0.01, inner_steps=steps, task_kind="regression", noise=1.0)
    batch = _regression_batch()
    ours = _batched_grads(learner, batch)
    ref = _higher_grads(model, batch, 0.01, steps)
    assert _rel_err(ours, ref) < RTOL
    # The second-order terms matter here, so the test could tell first from second order.
    fo = _autograd_loop_grads(model, batch, 0.01, steps, first_order=True)
    assert _rel_err(fo, ref) > 1e-4


@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradient_matches_autograd_task_loop(first_order: bool) -> None:
    torch.manual_seed(1)
    model = MLP(1, 1, hidden=(20, 20)).double()
    learner = MAML(model, inner_lr=0.05, inner_steps=2, first_order=first_order, task_kind="regression", noise=1.0)
    batch = _regression_batch(t=4, seed=3)
    ours = _batched_grads(learner, batch)
    ref = _autograd_loop_grads(model, batch, 0.05, 2, first_order=first_order)
    assert _rel_err(ours, ref) < RTOL


def test_chunked_vmap_gives_the_same_gradient() -> None:
    torch.manual_seed(2)
    batch = _regression_batch(t=7)
    model = MLP(1, 1).double()
    full = _batched_grads(MAML(model, inner_steps=2, task_kind="regression", noise=1.0), batch)
    chunked = _batched_grads(MAML(model, inner_steps=2, task_kind="regression", noise=1.0, chunk_size=3), batch)
    assert _rel_err(chunked, full) < 1e-12


@pytest.mark.parametrize("norm", ["task", "batch", "group", "instance", "layer", "none"])
def test_second_order_classification_conv4_matches_task_loop(norm: str) -> None:
    """Conv4 under vmap vs a per-task autograd loop, for every normalization.

    The loop computes each task on its own: the support pass with the support as context, the
    query pass normalized with the support statistics (``"task"``, by forwarding support and
    queries together with a context mask) or with the query set's own (``"batch"``).
    """
    torch.manual_seed(3)
    t, n_way, k, q = 3, 5, 1, 2
    g = torch.Generator().manual_seed(0)
    sx = torch.rand(t, n_way * k, 1, 28, 28, generator=g, dtype=torch.float64)
    qx = torch.rand(t, n_way * q, 1, 28, 28, generator=g, dtype=torch.float64)
    sy = torch.arange(n_way).repeat_interleave(k).repeat(t, 1)
    qy = torch.arange(n_way).repeat_interleave(q).repeat(t, 1)
    batch = TaskBatch(sx, sy, qx, qy, n_way=n_way)
    model = Conv4(out_features=n_way, hidden=8, norm=norm).double()
    if norm == "task":  # move alpha off its symmetric start so both moment sources matter
        with torch.no_grad():
            for m in model.modules():
                if hasattr(m, "alpha_offset"):
                    m.alpha_offset.fill_(0.3)
                    m.alpha_scale.fill_(-0.2)
    learner = MAML(model, inner_lr=0.4, inner_steps=1, task_kind="classification")
    ours = _batched_grads(learner, batch)
    names = [n for n, _ in model.named_parameters()]
    theta = list(model.parameters())
    total = [torch.zeros_like(p) for p in theta]
    ce = torch.nn.functional.cross_entropy
    for i in range(t):
        pred = torch.func.functional_call(model, dict(zip(names, theta)), (sx[i],))
        gi = torch.autograd.grad(ce(pred, sy[i]), theta, create_graph=True)
        phi = [p - 0.4 * gg for p, gg in zip(theta, gi)]
        if norm == "task":
            both = torch.cat([sx[i], qx[i]])
            ctx = torch.arange(len(both)) < len(sx[i])
            out = torch.func.functional_call(model, dict(zip(names, phi)), (both,), {"context_mask": ctx})[len(sx[i]):]
        else:
            out = torch.func.functional_call(model, dict(zip(names, phi)), (qx[i],))
        qloss = ce(out, qy[i]) / t
        for acc, gg in zip(total, torch.autograd.grad(qloss, theta)):
            acc += gg
    ref = {"model." + n: g for n, g in zip(names, total)}
    assert _rel_err(ours, ref) < RTOL


def test_learned_noise_does_not_move_theta() -> None:
    """The noise is fitted on detached residuals: with noise="learned" (at a std far from 1, so the
    Gaussian NLL's gradient r / sigma^2 differs from the squared error's), the backbone's
    meta-gradient is still the squared-error one of the independent task loop, and the noise's own
    gradient is the closed form d/d(log s) mean(0.5 log(2 pi s^2) + r^2 / (2 s^2)) = mean(1 - r^2/s^2)."""
    torch.manual_seed(1)
    model = MLP(1, 1, hidden=(20, 20)).double()
    learner = MAML(model, inner_lr=0.05, inner_steps=2, task_kind="regression").double()
    assert learner.log_noise is not None
    with torch.no_grad():
        learner.log_noise.fill_(-1.2)  # noise std 0.30
    batch = _regression_batch(t=4, seed=3)
    out = learner.meta_loss(batch)
    names = ["model." + n for n in learner.adapted_names]
    params = dict(learner.named_parameters())
    grads = torch.autograd.grad(out.loss, [params[n] for n in names] + [learner.log_noise])
    ours = dict(zip(names, grads[:-1]))
    ref = _autograd_loop_grads(model, batch, 0.05, 2, first_order=False)
    assert _rel_err(ours, ref) < RTOL
    with torch.no_grad():
        post = learner.adapt(batch.support)
        r2 = (learner.predict(post, batch.query_x).mean - batch.query_y) ** 2
    expected = (1 - r2 / torch.exp(torch.tensor(-2.4, dtype=torch.float64))).mean()
    torch.testing.assert_close(grads[-1], expected, rtol=1e-10, atol=0)  # float64 rounding


def test_test_inner_steps_sets_the_steps_of_adapt_only() -> None:
    """``adapt`` takes ``test_inner_steps`` plain gradient steps (checked against a hand-written
    loop); ``meta_loss`` keeps ``inner_steps``; ``adapt(steps=k)`` overrides both."""
    torch.manual_seed(4)
    model = MLP(1, 1, hidden=(10,)).double()
    batch = _regression_batch(t=2, seed=5)
    learner = MAML(model, inner_lr=0.05, inner_steps=1, test_inner_steps=4, task_kind="regression", noise=1.0)
    names = [n for n, _ in model.named_parameters()]

    def by_hand(t: int, steps: int) -> dict[str, torch.Tensor]:
        phi = [p.detach().clone().requires_grad_() for p in model.parameters()]
        for _ in range(steps):
            pred = torch.func.functional_call(model, dict(zip(names, phi)), (batch.support_x[t],))
            g = torch.autograd.grad(((pred - batch.support_y[t]) ** 2).mean(), phi)
            phi = [(p - 0.05 * gi).detach().requires_grad_() for p, gi in zip(phi, g)]
        return dict(zip(names, phi))

    with torch.no_grad():
        post4 = learner.adapt(batch.support)
        post2 = learner.adapt(batch.support, steps=2)
    for t in range(2):
        for steps, post in ((4, post4), (2, post2)):
            ref = by_hand(t, steps)
            for n in names:
                torch.testing.assert_close(post.params[n][t], ref[n], rtol=1e-12, atol=1e-14)
    # meta_loss still adapts with inner_steps = 1: its loss is the query MSE after one step
    one = MAML(model, inner_lr=0.05, inner_steps=1, task_kind="regression", noise=1.0)
    with torch.no_grad():
        mse1 = ((one.predict(one.adapt(batch.support), batch.query_x).mean - batch.query_y) ** 2).mean()
        assert float(learner.meta_loss(batch).loss) == pytest.approx(float(mse1), rel=1e-12)
        mse4 = ((learner.predict(post4, batch.query_x).mean - batch.query_y) ** 2).mean()
    assert abs(float(mse4) - float(mse1)) > 1e-6  # the two step counts are distinguishable
    from bayesmeta.exceptions import ConfigError

    # a bad constructor option is a ConfigError in every learner (issue 16: one option validator)
    with pytest.raises(ConfigError, match="test_inner_steps"):
        MAML(model, test_inner_steps=-1, task_kind="regression")


def test_zero_steps_adapt_to_theta_and_metasgd_steps_use_per_parameter_rates() -> None:
    """adapt(steps=0) is theta for every task; Meta-SGD's step is theta - alpha * grad with its
    learned per-parameter rates alpha (set to distinct values here); one present support point
    per task (a mask) gives the plain gradient of that point's loss."""
    torch.manual_seed(6)
    model = MLP(1, 1, hidden=(6,)).double()
    batch = _regression_batch(t=2, s=4, seed=8)
    mask = torch.zeros(2, 4, dtype=torch.bool)
    mask[:, 0] = True
    one_point = TaskBatch(batch.support_x, batch.support_y, batch.query_x, batch.query_y, support_mask=mask)
    learner = MAML(model, inner_lr=0.05, learn_inner_lr=True, task_kind="regression", noise=1.0).double()
    names = [n for n, _ in model.named_parameters()]
    with torch.no_grad():
        for i, n in enumerate(names):  # (the ParameterDict keeps its keys sorted, not in model order)
            learner.inner_lrs[n.replace(".", "__")].fill_(0.01 * (i + 1))
        post0 = learner.adapt(one_point.support, steps=0)
        post1 = learner.adapt(one_point.support, steps=1)
    theta = dict(model.named_parameters())
    for n in names:
        assert post0.params[n].shape == (2, *theta[n].shape)
        assert torch.equal(post0.params[n][1], theta[n].detach())
    for t in range(2):
        phi = [p.detach().clone().requires_grad_() for p in model.parameters()]
        pred = torch.func.functional_call(model, dict(zip(names, phi)), (batch.support_x[t, :1],))
        g = torch.autograd.grad(((pred - batch.support_y[t, :1]) ** 2).mean(), phi)
        for i, (n, p, gi) in enumerate(zip(names, phi, g)):
            torch.testing.assert_close(post1.params[n][t], p.detach() - 0.01 * (i + 1) * gi, rtol=1e-12, atol=1e-14)
