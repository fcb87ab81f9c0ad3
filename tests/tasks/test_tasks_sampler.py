"""LabelledDataset and FewShotSampler on synthetic data whose pixels encode the example index."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bayesmeta.exceptions import DataError, InvalidValueError, ShapeError
from bayesmeta.tasks import FewShotSampler, LabelledDataset, TaskBatch


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_dataset(counts: list[int], seed: int = 0) -> LabelledDataset:
    """Example i is ``1000 i + [0..15]`` as a 1x4x4 image; labels in a shuffled order."""
    labels = torch.cat([torch.full((c,), k) for k, c in enumerate(counts)])
    labels = labels[torch.randperm(labels.numel(), generator=gen(seed))]
    n = labels.numel()
    images = (1000.0 * torch.arange(n)[:, None] + torch.arange(16.0)).reshape(n, 1, 4, 4)
    return LabelledDataset(images, labels, [f"c{k}" for k in range(len(counts))])


def example_ids(x: torch.Tensor) -> torch.Tensor:
    """Recover the example index of every image ``[..., 1, 4, 4]`` (rotation-invariant)."""
    return (x.flatten(-3).min(-1).values / 1000).round().long()


# ---------------------------------------------------------------------------- LabelledDataset
def test_dataset_basics_and_validation() -> None:
    ds = make_dataset([3, 4, 5])
    assert ds.n_classes == 3 and len(ds) == 12 and ds.example_shape == (1, 4, 4)
    assert ds.class_counts.tolist() == [3, 4, 5]
    with pytest.raises(InvalidValueError, match="images"):
        LabelledDataset(torch.zeros(3, 2, dtype=torch.int64), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ShapeError, match="labels"):
        LabelledDataset(torch.zeros(3, 2), torch.zeros(4, dtype=torch.int64))
    with pytest.raises(InvalidValueError, match="labels"):
        LabelledDataset(torch.zeros(3, 2), torch.tensor([0, 1, 2]), ["a", "b"])
    with pytest.raises(DataError, match=r"class\(es\) \[1\]"):
        LabelledDataset(torch.zeros(3, 2), torch.tensor([0, 2, 2]))


def test_split_classes_is_a_disjoint_partition() -> None:
    ds = make_dataset([2] * 20)
    splits = ds.split_classes({"train": 12, "val": 3, "test": 5}, generator=gen(1))
    assert {k: v.n_classes for k, v in splits.items()} == {"train": 12, "val": 3, "test": 5}
    names = [set(v.class_names) for v in splits.values()]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    assert set().union(*names) == set(ds.class_names)
    # examples follow their class: the split's labels name the same classes as the originals
    for split in splits.values():
        ids = example_ids(split.images)
        original = [ds.class_names[int(c)] for c in ds.labels[ids]]
        assert original == [split.class_names[int(c)] for c in split.labels]
    again = ds.split_classes({"train": 12, "val": 3, "test": 5}, generator=gen(1))
    assert again["test"].class_names == splits["test"].class_names
    ordered = ds.split_classes({"a": 5, "b": 5}, shuffle=False)
    assert ordered["b"].class_names == tuple(f"c{k}" for k in range(5, 10))
    with pytest.raises(DataError, match="at most C = 20"):
        ds.split_classes({"train": 15, "test": 6})
    with pytest.raises(InvalidValueError, match="sizes\\['val'\\]"):
        ds.split_classes({"train": 15, "val": 0})


def test_with_rotations_makes_four_classes_per_class() -> None:
    ds = make_dataset([2, 3])
    rot = ds.with_rotations()
    assert rot.n_classes == 8 and len(rot) == 20
    assert rot.class_names[:4] == ("c0/rot000", "c0/rot090", "c0/rot180", "c0/rot270")
    for c in range(2):
        base = ds.images[ds.labels == c]
        for r in range(4):
            assert torch.equal(rot.images[rot.labels == 4 * c + r], torch.rot90(base, r, dims=(-2, -1)))
    with pytest.raises(ShapeError, match="square"):
        LabelledDataset(torch.zeros(4, 1, 2, 3), torch.tensor([0, 0, 1, 1])).with_rotations()


# ----------------------------------------------------------------------------- FewShotSampler
def check_episodes(ds: LabelledDataset, batch: TaskBatch, n_way: int, k: int, q: int) -> None:
    """Every structural promise of an N-way K-shot batch, checked through example indices."""
    t = batch.n_tasks
    assert batch.n_way == n_way
    assert batch.support_x.shape == (t, n_way * k, *ds.example_shape)
    assert batch.query_x.shape == (t, n_way * q, *ds.example_shape)
    assert batch.support_y.dtype == torch.int64 and batch.query_y.dtype == torch.int64
    sid, qid = example_ids(batch.support_x), example_ids(batch.query_x)
    for i in range(t):
        assert torch.bincount(batch.support_y[i], minlength=n_way).tolist() == [k] * n_way
        assert torch.bincount(batch.query_y[i], minlength=n_way).tolist() == [q] * n_way
        ids = torch.cat([sid[i], qid[i]])
        assert ids.unique().numel() == ids.numel()  # no example twice, none in both sets
        labels = torch.cat([batch.support_y[i], batch.query_y[i]])
        true = ds.labels[ids]
        # one dataset class per episode label, and different labels are different classes
        cls_of_label = [true[labels == j].unique() for j in range(n_way)]
        assert all(c.numel() == 1 for c in cls_of_label)
        assert torch.cat(cls_of_label).unique().numel() == n_way


def test_sampler_episode_structure() -> None:
    ds = make_dataset([8] * 12)
    batch = FewShotSampler(ds, n_way=5, k_shot=2, n_query=3).sample(16, gen(0))
    check_episodes(ds, batch, 5, 2, 3)


def test_sampler_ragged_class_sizes() -> None:
    ds = make_dataset([5, 9, 6, 12, 5, 7, 20])
    sampler = FewShotSampler(ds, n_way=4, k_shot=1, n_query=4)
    batch = sampler.sample(64, gen(1))
    check_episodes(ds, batch, 4, 1, 4)
    # the 20-example class is drawn from all its examples, not only the first 5 table slots
    ids = torch.cat([example_ids(batch.support_x), example_ids(batch.query_x)], 1).flatten()
    assert ids[ds.labels[ids] == 6].unique().numel() > 15


def test_sampler_random_label_assignment_and_coverage() -> None:
    ds = make_dataset([4] * 10)
    ep = FewShotSampler(ds, n_way=3, k_shot=1, n_query=1).sample_indices(300, gen(2))
    assert ep.classes.shape == (300, 3) and ep.support.shape == (300, 3, 1) and ep.query.shape == (300, 3, 1)
    # every class shows up under label 0, and a class is not tied to one label
    assert set(ep.classes[:, 0].tolist()) == set(range(10))
    assert set(ep.classes[ep.classes.eq(4).any(1)].eq(4).nonzero()[:, 1].tolist()) == {0, 1, 2}


def test_sampler_determinism() -> None:
    sampler = FewShotSampler(make_dataset([6] * 10), n_way=4, k_shot=2, n_query=2)
    a, b, c = sampler.sample(5, gen(3)), sampler.sample(5, gen(3)), sampler.sample(5, gen(4))
    assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_x, b.query_x)
    assert not torch.equal(a.support_x, c.support_x)


def test_lazy_rotations_equal_materialized_rotations() -> None:
    ds = make_dataset([5] * 6)
    lazy = FewShotSampler(ds, n_way=10, k_shot=2, n_query=3, augment_rotations=True)
    eager = FewShotSampler(ds.with_rotations(), n_way=10, k_shot=2, n_query=3)
    assert lazy.n_classes == eager.n_classes == 24
    a, b = lazy.sample(8, gen(5)), eager.sample(8, gen(5))
    assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_x, b.query_x)
    assert torch.equal(a.support_y, b.support_y)
    # rotated classes really are rotated: some support images differ from the stored originals
    stored = ds.images[example_ids(a.support_x)]
    assert not torch.equal(stored, a.support_x)


def test_sampler_errors_name_the_argument() -> None:
    ds = make_dataset([5, 6, 7])
    with pytest.raises(DataError, match=r"n_way: expected at most the 3 classes.*got n_way = 4"):
        FewShotSampler(ds, n_way=4, k_shot=1, n_query=1)
    with pytest.raises(DataError, match=r"k_shot \+ n_query: expected at most 5.*'c0'.*3 \+ 3 = 6"):
        FewShotSampler(ds, n_way=2, k_shot=3, n_query=3)
    with pytest.raises(InvalidValueError, match="k_shot"):
        FewShotSampler(ds, n_way=2, k_shot=0, n_query=1)
    with pytest.raises(InvalidValueError, match="n_query"):
        FewShotSampler(ds, n_way=2, k_shot=1, n_query=-2)
    with pytest.raises(InvalidValueError, match="n_way"):
        FewShotSampler(ds, n_way=0, k_shot=1, n_query=1)
    with pytest.raises(InvalidValueError, match="n_tasks"):
        FewShotSampler(ds, n_way=2, k_shot=1, n_query=1).sample(0)
    # rotations count as classes for n_way
    assert FewShotSampler(ds, n_way=12, k_shot=1, n_query=1, augment_rotations=True).n_classes == 12


@settings(max_examples=30, deadline=None)
@given(
    counts=st.lists(st.integers(2, 9), min_size=2, max_size=8),
    n_way=st.integers(1, 8),
    k_shot=st.integers(1, 4),
    n_query=st.integers(1, 4),
    seed=st.integers(0, 2**31 - 1),
)
def test_sampler_property(counts: list[int], n_way: int, k_shot: int, n_query: int, seed: int) -> None:
    ds = make_dataset(counts, seed)
    fits = n_way <= len(counts) and k_shot + n_query <= min(counts)
    if not fits:
        with pytest.raises(DataError):
            FewShotSampler(ds, n_way, k_shot, n_query)
        return
    batch = FewShotSampler(ds, n_way, k_shot, n_query).sample(3, gen(seed))
    check_episodes(ds, batch, n_way, k_shot, n_query)
