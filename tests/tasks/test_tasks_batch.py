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


# ------------------------------------------------- gaps found by mutation testing (docs/testing.md)
@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: reg_batch(support_x=[[0.0]]), r"support_x: expected a torch.Tensor, got list"),
        (lambda: reg_batch(support_y=None), r"support_y: expected a torch.Tensor, got NoneType"),
        (lambda: reg_batch(support_x=torch.zeros(2, 5, 1, dtype=torch.long)), r"support_x: expected a floating-point tensor, got .*int64"),
        (lambda: reg_batch(query_y=torch.zeros(2, 4, 1, dtype=torch.long)), r"query_y: expected a floating-point tensor, got .*int64"),
        (lambda: reg_batch(query_x=[1.0]), r"query_x: expected a tensor \[T, Q, \*features\] with at least 3 dims, got list"),
        (lambda: reg_batch(query_x=torch.zeros(2, 4)), r"query_x: expected a tensor \[T, Q, \*features\] with at least 3 dims, got .*\[2, 4\]"),
        (lambda: cls_batch(query_x=torch.zeros(2, 3, 1, 5, 5)), r"query_x: expected feature shape \[1, 4, 4\] to match support_x"),
        (lambda: reg_batch(query_x=torch.zeros(2, 0, 1), query_y=torch.zeros(2, 0, 1)), r"one query point, got shape \[2, 0, 1\] float32$"),
        (lambda: reg_batch(support_x=torch.zeros(2, 0, 1), support_y=torch.zeros(2, 0, 1)), r"one support point, got shape \[2, 0, 1\] float32 \(an empty context set\)$"),
        (lambda: reg_batch(support_mask=torch.tensor([[True] * 5, [False] * 5])), r"hides all points of task\(s\) \[1\]$"),
    ],
)
def test_error_messages_name_the_field_and_what_was_given(make, message: str) -> None:
    with pytest.raises(BayesMetaError, match=message):
        make()


def test_all_hidden_tasks_are_listed_up_to_ten() -> None:
    t = 12
    mask = torch.ones(t, 5, dtype=torch.bool)
    mask[:, :] = False
    mask[0] = True
    with pytest.raises(InvalidValueError, match=r"task\(s\) \[1, 2, 3, 4, 5, 6, 7, 8, 9, 10\]$"):
        TaskBatch(torch.zeros(t, 5, 1), torch.zeros(t, 5, 1), torch.zeros(t, 4, 1), torch.zeros(t, 4, 1), support_mask=mask)


@pytest.mark.parametrize("n_way", [0, -1, True, 2.0])
def test_bad_n_way_is_refused_by_both_containers(n_way) -> None:
    from bayesmeta.tasks import SupportSet

    with pytest.raises(InvalidValueError, match=rf"n_way: expected a positive integer or None, got {n_way!r}"):
        cls_batch(n_way=n_way)
    if not isinstance(n_way, float):  # SupportSet accepts any integral n_way >= 1
        with pytest.raises(InvalidValueError, match=rf"n_way: expected a positive integer or None, got {n_way!r}"):
            SupportSet(torch.zeros(2, 6, 1), torch.zeros(2, 6, dtype=torch.long), n_way=n_way)


def test_one_way_tasks_are_valid() -> None:
    from bayesmeta.tasks import SupportSet

    b = cls_batch(support_y=torch.zeros(2, 6, dtype=torch.long), query_y=torch.zeros(2, 3, dtype=torch.long), n_way=1)
    assert b.n_way == 1 and b.support.n_way == 1
    assert SupportSet(torch.zeros(2, 6, 1), torch.zeros(2, 6, dtype=torch.long), n_way=1).n_way == 1


def test_support_set_validates_its_mask_and_names_the_support_fields() -> None:
    from bayesmeta.tasks import SupportSet

    x, y = torch.zeros(2, 6, 1), torch.zeros(2, 6, dtype=torch.long)
    with pytest.raises(ShapeError, match=r"support_mask: expected a bool tensor of shape \[T, N\] = \[2, 6\]"):
        SupportSet(x, y, torch.ones(2, 6), n_way=2)
    with pytest.raises(InvalidValueError, match=r"^support_y: expected labels in \[0, n_way\)"):
        SupportSet(x, torch.full((2, 6), 5), n_way=2)


def test_labels_of_hidden_points_are_not_validated_but_present_ones_are() -> None:
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[:, -1] = False
    y = torch.arange(3).repeat(2, 2)
    y[:, -1] = 99  # padding with an impossible label, hidden by the mask: fine
    assert cls_batch(support_y=y, support_mask=mask).support_y[0, -1] == 99
    y[0, 0] = 7  # ...but a present point with a bad label is refused, naming the range seen
    with pytest.raises(InvalidValueError, match=r"support_y: expected labels in \[0, n_way\) = \[0, 3\), got values in \[0, 7\]"):
        cls_batch(support_y=y, support_mask=mask)


def test_index_with_an_int_keeps_one_task_and_the_task_dim() -> None:
    g = torch.Generator().manual_seed(0)
    b = reg_batch(support_x=torch.randn(3, 5, 1, generator=g), support_y=torch.randn(3, 5, 1, generator=g),
                  query_x=torch.randn(3, 4, 1, generator=g), query_y=torch.randn(3, 4, 1, generator=g))
    one = b.index(1)
    assert one.n_tasks == 1 and torch.equal(one.support_x, b.support_x[1:2]) and torch.equal(one.query_y, b.query_y[1:2])
    assert b.support.index(0).n_tasks == 1 and torch.equal(b.support.index(2).x, b.support_x[2:3])
    assert torch.equal(b.index(torch.tensor([2, 0])).support_x, b.support_x[[2, 0]])


def test_support_set_index_keeps_mask_and_n_way() -> None:
    from bayesmeta.tasks import SupportSet

    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2, [True] * 5 + [False]])
    s = SupportSet(torch.randn(3, 6, 2), torch.arange(3).repeat(3, 2), mask, n_way=3)
    one = s.index(1)
    assert one.n_way == 3 and torch.equal(one.mask, mask[1:2]) and torch.equal(one.y, s.y[1:2])
    two = s.index(torch.tensor([2, 0]))
    assert torch.equal(two.mask, mask[[2, 0]]) and torch.equal(two.x, s.x[[2, 0]]) and two.n_way == 3
