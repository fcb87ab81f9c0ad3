"""TaskBatch hands out its halves built once, from fields validated once at construction (issue 16)."""

from __future__ import annotations

from unittest import mock

import pytest
import torch

from bayesmeta.exceptions import ShapeError
from bayesmeta.tasks import TaskBatch
from bayesmeta.tasks import batch as batch_module
from bayesmeta.tasks.batch import SupportSet


def _batch() -> TaskBatch:
    g = torch.Generator().manual_seed(0)
    return TaskBatch(torch.randn(2, 3, 1, generator=g), torch.randn(2, 3, 1, generator=g),
                     torch.randn(2, 4, 1, generator=g), torch.randn(2, 4, 1, generator=g),
                     query_mask=torch.tensor([[True, True, False, True], [True] * 4]))


def test_halves_are_not_revalidated_on_access() -> None:
    b = _batch()
    with mock.patch.object(batch_module, "_check_set", side_effect=AssertionError("re-validated")):
        s1, s2, q, j = b.support, b.support, b.query, b.joint()
        assert b.joint() is j
    assert s1 is s2
    torch.testing.assert_close(j.x, torch.cat([b.support_x, b.query_x], 1))
    assert j.mask is not None and j.mask.tolist()[0] == [True] * 3 + [True, True, False, True]
    assert q.mask is b.query_mask and s1.n_way is None


def test_validation_still_happens_at_the_boundary() -> None:
    b = _batch()
    with pytest.raises(ShapeError, match="query_x"):
        TaskBatch(b.support_x, b.support_y, b.query_x[:1], b.query_y[:1])
    with pytest.raises(ShapeError, match="support_y"):
        SupportSet(b.support_x, b.support_y[:, :2])
