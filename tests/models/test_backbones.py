"""Backbones: shapes, and the hand-written batch norm against torch's."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, vmap

from bayesmeta.exceptions import BayesMetaError
from bayesmeta.models import MLP, Conv4
from bayesmeta.models.conv import BatchStatNorm2d


def test_batch_stat_norm_equals_torch_batch_norm_without_running_stats() -> None:
    torch.manual_seed(0)
    x = torch.randn(6, 4, 5, 5, dtype=torch.float64)
    ours = BatchStatNorm2d(4).double()
    ref = torch.nn.BatchNorm2d(4, track_running_stats=False).double()
    with torch.no_grad():
        ours.weight.normal_()
        ours.bias.normal_()
        ref.weight.copy_(ours.weight)
        ref.bias.copy_(ours.bias)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("norm", ["batch", "group", "none"])
def test_conv4_shapes_and_vmap(norm: str) -> None:
    torch.manual_seed(0)
    m = Conv4(out_features=5, hidden=16, norm=norm)
    x = torch.randn(3, 7, 1, 28, 28)
    params = dict(m.named_parameters())
    out = vmap(lambda xx: functional_call(m, params, (xx,)))(x)
    assert out.shape == (3, 7, 5)
    torch.testing.assert_close(out, torch.stack([m(xx) for xx in x]))
    assert Conv4(hidden=16, norm=norm).features(x).shape == (3, 7, 16)


def test_mlp_shapes_and_bad_arguments() -> None:
    m = MLP(2, 3, hidden=(8,))
    assert m(torch.randn(4, 5, 2)).shape == (4, 5, 3)
    assert m.features(torch.randn(4, 2)).shape == (4, 8)
    with pytest.raises(BayesMetaError, match="in_features"):
        MLP(0, 1)
    with pytest.raises(BayesMetaError, match="norm"):
        Conv4(norm="layer")  # type: ignore[arg-type]
