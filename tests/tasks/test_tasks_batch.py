"""TaskBatch validates itself: every bad field is named with the expected and the given shape."""

from __future__ import annotations

import pytest
import torch

from bayesmeta.exceptions import BayesMetaError, InvalidValueError, ShapeError
from bayesmeta.tasks import TaskBatch


def cls_batch(**over) -> TaskBatch:
    kw = dict(
        support_x=torch.zeros(2, 6, 1, 4, 4), support_y=torch.arange(3).repeat(2, 2),
        query_x=torch.zeros(2, 3, 1, 4, 4), query_y=torch.arange(3).repeat(2, 1), n_way=3,
    )
    kw.update(over)
    return TaskBatch(**kw)


def reg_batch(**over) -> TaskBatch:
    kw = dict(support_x=torch.zeros(2, 5, 1), support_y=torch.zeros(2, 5, 1),
              query_x=torch.zeros(2, 4, 1), query_y=torch.zeros(2, 4, 1))
    kw.update(over)
    return TaskBatch(**kw)


def test_valid_batches_and_views() -> None:
    b = cls_batch()
    assert b.n_tasks == 2 and b.is_classification and len(b) == 2
    assert b.support.x.shape == (2, 6, 1, 4, 4) and b.index(1).n_tasks == 1
    j = reg_batch().joint()
    assert j.x.shape == (2, 9, 1) and j.mask is None
    assert reg_batch().to(dtype=torch.float64).support_x.dtype == torch.float64


@pytest.mark.parametrize(
    ("over", "field", "kind"),
    [
        ({"query_x": torch.zeros(3, 3, 1, 4, 4)}, "query_x", ShapeError),          # T mismatch
        ({"query_x": torch.zeros(2, 3, 1, 5, 5)}, "query_x", ShapeError),          # feature shape
        ({"support_y": torch.arange(3).repeat(2, 1)}, "support_y", ShapeError),    # S mismatch
        ({"support_y": torch.full((2, 6), 3)}, "support_y", InvalidValueError),    # label >= n_way
        ({"query_y": -torch.ones(2, 3, dtype=torch.long)}, "query_y", InvalidValueError),
        ({"support_y": torch.zeros(2, 6)}, "support_y", InvalidValueError),        # float labels
        ({"support_x": torch.full((2, 6, 1, 4, 4), float("nan"))}, "support_x", InvalidValueError),
        ({"n_way": 0}, "n_way", InvalidValueError),
    ],
)
def test_bad_classification_fields_are_named(over: dict, field: str, kind: type) -> None:
    with pytest.raises(kind, match=field):
        cls_batch(**over)


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"support_y": torch.zeros(2, 5)}, "support_y"),                  # missing Dy
        ({"query_y": torch.zeros(2, 4, 2)}, "query_y"),                  # Dy mismatch
        ({"query_y": torch.tensor(float("inf")).expand(2, 4, 1)}, "query_y"),
        ({"support_mask": torch.zeros(2, 5, dtype=torch.bool)}, "support_mask"),  # hides all
        ({"support_mask": torch.ones(2, 4, dtype=torch.bool)}, "support_mask"),
        ({"support_x": torch.zeros(2, 5)}, "support_x"),                  # no feature dim
    ],
)
def test_bad_regression_fields_are_named(over: dict, field: str) -> None:
    with pytest.raises(BayesMetaError, match=field):
        reg_batch(**over)


def test_error_messages_say_expected_and_given() -> None:
    with pytest.raises(ShapeError) as e:
        cls_batch(query_x=torch.zeros(3, 3, 1, 4, 4))
    assert "expected T = 2" in str(e.value) and "[3, 3, 1, 4, 4]" in str(e.value)


def test_empty_context_set_is_refused_by_the_container() -> None:
    with pytest.raises(ShapeError, match="support_x: expected at least one task and one support point.*empty context"):
        reg_batch(support_x=torch.zeros(2, 0, 1), support_y=torch.zeros(2, 0, 1))
    with pytest.raises(ShapeError, match="query_x"):
        reg_batch(query_x=torch.zeros(2, 0, 1), query_y=torch.zeros(2, 0, 1))
