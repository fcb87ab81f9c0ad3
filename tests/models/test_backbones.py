"""Backbones: shapes under vmap and bad arguments (normalization layers: test_norm.py)."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, vmap

from bayesmeta.exceptions import BayesMetaError
from bayesmeta.models import MLP, Conv4


@pytest.mark.parametrize("norm", ["task", "batch", "group", "instance", "layer", "none"])
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
        Conv4(norm="batchnorm")  # type: ignore[arg-type]
