"""DKT's learned class temperature: the query-NLL term, its gradient, and that it moves the right way."""

from __future__ import annotations

import math

import pytest
import torch

from bayesmeta.inference.dkt import DKT
from bayesmeta.models import MLP
from bayesmeta.tasks import TaskBatch


def _batch(
    separation: float, *, shuffle_query: bool = False, t: int = 8, seed: int = 0
) -> TaskBatch:
    """2-way tasks, 3 support and 10 query points per class around class centres ``+-separation``.

    ``shuffle_query`` draws the query labels at random, so nothing predicts them (an
    over-confident predictive is then punished by the NLL).
    """
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([-separation, separation], dtype=torch.float64).reshape(1, 2, 1, 1)
    sx = (centres + 0.3 * torch.randn(t, 2, 3, 1, generator=g, dtype=torch.float64)).reshape(
        t, 6, 1
    )
    qx = (centres + 0.3 * torch.randn(t, 2, 10, 1, generator=g, dtype=torch.float64)).reshape(
        t, 20, 1
    )
    sy = torch.arange(2).repeat_interleave(3).repeat(t, 1)
    qy = torch.arange(2).repeat_interleave(10).repeat(t, 1)
    if shuffle_query:
        qy = torch.randint(0, 2, qy.shape, generator=g)
    return TaskBatch(sx, sy, qx, qy, n_way=2)


def _dkt(noise: float, **kw: object) -> DKT:
    torch.manual_seed(0)
    return DKT(
        MLP(1, None, hidden=(8,)),
        task_kind="classification",
        n_way=2,
        noise_init=noise,
        learn_noise=False,
        **kw,  # type: ignore[arg-type]
    ).double()


def _fit_temperature(dkt: DKT, batch: TaskBatch, steps: int = 60) -> list[float]:
    """Adam on the temperature alone; returns the query NLL before and after."""
    assert dkt.log_temperature is not None
    opt = torch.optim.Adam([dkt.log_temperature], lr=0.1)
    first = None
    for _ in range(steps):
        opt.zero_grad()
        out = dkt.meta_loss(batch)
        first = out.metrics["query_nll"] if first is None else first
        out.loss.backward()
        opt.step()
    return [first, dkt.meta_loss(batch).metrics["query_nll"]]  # type: ignore[list-item]


def test_temperature_falls_on_an_under_confident_toy() -> None:
    # well separated classes, but a large +-1 noise: every query is right yet soft
    dkt = _dkt(noise=2.0)
    batch = _batch(3.0)
    with torch.no_grad():
        probs = dkt.predict(dkt.adapt(batch.support), batch.query_x).probs
    assert bool((probs.argmax(-1) == batch.query_y).all())
    assert float(probs.max(-1).values.mean()) < 0.9  # under-confident to start with
    before, after = _fit_temperature(dkt, batch)
    assert float(dkt.class_temperature().detach()) < 0.5  # sharpened
    assert after < before


def test_temperature_rises_when_the_query_labels_are_unpredictable() -> None:
    dkt = _dkt(noise=0.01)
    batch = _batch(3.0, shuffle_query=True)
    before, after = _fit_temperature(dkt, batch)
    assert float(dkt.class_temperature().detach()) > 2.0  # softened towards the uniform 50/50
    assert (
        after < 0.5 * before
    )  # confidently wrong at T = 1; the optimum is T -> infinity (NLL log 2)


def test_query_term_reaches_the_temperature_only() -> None:
    batch = _batch(1.0)
    learned, fixed = _dkt(noise=0.1), _dkt(noise=0.1, learn_temperature=False)
    fixed.load_state_dict({k: v for k, v in learned.state_dict().items() if k != "log_temperature"})
    assert fixed.log_temperature is None
    out_l, out_f = learned.meta_loss(batch), fixed.meta_loss(batch)
    assert float(out_l.loss.detach()) == pytest.approx(
        float(out_f.loss.detach()) + out_l.metrics["query_nll"], rel=1e-12
    )
    out_l.loss.backward()
    out_f.loss.backward()
    assert learned.log_temperature is not None and learned.log_temperature.grad is not None
    assert float(learned.log_temperature.grad.abs()) > 0
    # every other gradient is the marginal likelihood's alone
    grads_f = {n: p.grad for n, p in fixed.named_parameters()}
    for n, p in learned.named_parameters():
        if n == "log_temperature":
            continue
        if grads_f[n] is None:
            assert p.grad is None, n
        else:
            torch.testing.assert_close(p.grad, grads_f[n], rtol=1e-12, atol=1e-14)


def test_temperature_divides_the_class_log_probabilities_and_keeps_the_decision() -> None:
    batch = _batch(1.0)
    dkt = _dkt(noise=0.1)
    with torch.no_grad():
        p1 = dkt.predict(dkt.adapt(batch.support), batch.query_x)
        dkt.log_temperature.fill_(math.log(2.5))  # type: ignore[union-attr]
        p2 = dkt.predict(dkt.adapt(batch.support), batch.query_x)
    torch.testing.assert_close(
        p2.sample_log_probs, torch.log_softmax(p1.sample_log_probs / 2.5, -1)
    )
    assert torch.equal(p1.predicted, p2.predicted)


def test_checkpoint_without_temperature_loads_with_the_initial_one() -> None:
    dkt = _dkt(noise=0.1, temperature=1.0)
    old = {k: v for k, v in dkt.state_dict().items() if k != "log_temperature"}
    with torch.no_grad():
        dkt.log_temperature.fill_(1.7)  # type: ignore[union-attr]
    dkt.load_state_dict(old)
    assert float(dkt.class_temperature().detach()) == pytest.approx(
        math.exp(1.7)
    )  # kept: nothing to load
    fresh = _dkt(noise=0.1, temperature=1.0)
    fresh.load_state_dict(old)
    assert float(fresh.class_temperature().detach()) == pytest.approx(1.0)


def test_regression_dkt_has_no_temperature_parameter() -> None:
    dkt = DKT(MLP(1, None, hidden=(8,)), task_kind="regression")
    assert dkt.log_temperature is None
    assert "log_temperature" not in dict(dkt.named_parameters())
