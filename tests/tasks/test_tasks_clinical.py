"""ClinicalSampler: fixed class identity, support/query from different splits, query prevalence."""

from __future__ import annotations

import pytest
import torch

from bayesmeta.exceptions import DataError, InvalidValueError
from bayesmeta.tasks import (
    ClinicalSampler,
    LabelledDataset,
    fixed_episodes,
    medmnist,
    mednist,
    prevalence_counts,
)


def _toy(counts, offset=0.0, source=None):
    """Examples whose single pixel value encodes (offset + global index), labels by class."""
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    x = (offset + torch.arange(labels.numel(), dtype=torch.float32)).view(-1, 1)
    return LabelledDataset(x, labels, [f"c{c}" for c in range(len(counts))], source=source)


def test_prevalence_counts_largest_remainder():
    assert prevalence_counts([0.625, 0.375], 20) == [13, 7]  # 12.5 / 7.5: the larger remainder first, tie -> lower index
    assert prevalence_counts([1, 1, 1], 10) == [4, 3, 3]
    assert sum(prevalence_counts([174, 46, 92, 68, 20], 50)) == 50
    with pytest.raises(InvalidValueError, match="prevalence"):
        prevalence_counts([-1, 2], 10)


def test_fixed_identity_and_labels_match_classes():
    ds = _toy([30, 40, 50])
    s = ClinicalSampler(ds, k_shot=2, n_query=4)
    b = s.sample(5, torch.Generator().manual_seed(0))
    for x, y in ((b.support_x, b.support_y), (b.query_x, b.query_y)):
        idx = x.view(5, -1).long()
        assert torch.equal(ds.labels[idx], y)  # label j is class j in every task
    assert b.query_y.shape == (5, 12) and b.n_way == 3


def test_support_and_query_disjoint_within_task_from_one_pool():
    ds = _toy([8, 8])
    s = ClinicalSampler(ds, k_shot=3, n_query=5)  # 3 + 5 = all 8 of each class
    b = s.sample(20, torch.Generator().manual_seed(1))
    for t in range(20):
        used = torch.cat([b.support_x[t].flatten(), b.query_x[t].flatten()])
        assert used.unique().numel() == 16


def test_support_and_query_from_different_splits():
    sup = _toy([10, 10], offset=0.0, source="train")
    qry = _toy([30, 50], offset=1000.0, source="test")
    s = ClinicalSampler(sup, k_shot=2, n_query=10, query=qry, prevalence="natural")
    b = s.sample(4, torch.Generator().manual_seed(2))
    assert bool((b.support_x < 1000).all()) and bool((b.query_x >= 1000).all())
    # natural prevalence of the query split: 50 / 80 of 20 queries = 12.5 -> 12 or 13 positives
    assert b.query_y.sum(1).tolist() == [prevalence_counts([30, 50], 20)[1]] * 4
    assert torch.equal(qry.labels[(b.query_x.view(4, -1) - 1000).long()], b.query_y)


def test_natural_prevalence_of_pneumonia_test_split():
    s = ClinicalSampler(
        medmnist("pneumoniamnist", "val"), 5, 20, query=medmnist("pneumoniamnist", "test"), prevalence="natural"
    )
    b = s.sample(2, torch.Generator().manual_seed(0))
    # 390 / 624 = 62.5% pneumonia of 40 queries = 25
    assert b.query_y.sum(1).tolist() == [25, 25]


def test_given_prevalence_and_balanced():
    ds = _toy([100, 100])
    b = ClinicalSampler(ds, 1, 10, prevalence=[0.9, 0.1]).sample(3)
    assert (b.query_y == 1).sum(1).tolist() == [2, 2, 2]
    b = ClinicalSampler(ds, 1, 10).sample(3)
    assert (b.query_y == 1).sum(1).tolist() == [10, 10, 10]
    with pytest.raises(InvalidValueError, match="expected 2 fractions"):
        ClinicalSampler(ds, 1, 10, prevalence=[0.2, 0.3, 0.5])
    with pytest.raises(DataError, match=r"none of class.*c1"):
        ClinicalSampler(ds, 1, 10, prevalence=[0.99, 0.01])


def test_too_small_class_is_named_with_split_and_counts():
    with pytest.raises(DataError, match=r"class 'malignant' \(label 0\) of split 'breastmnist/val' has 21 examples, asked for 5 support \+ 30 query = 35"):
        ClinicalSampler(medmnist("breastmnist", "val"), 5, 30)
    sup, qry = _toy([10, 2], source="site-A"), _toy([50, 50], source="site-B")
    with pytest.raises(DataError, match=r"class 'c1' \(label 1\) of support split 'site-A' has 2 examples, asked for k_shot = 5"):
        ClinicalSampler(sup, 5, 5, query=qry)
    with pytest.raises(DataError, match=r"class 'c0' \(label 0\) of query split 'site-B' has 50 examples, asked for 60 queries"):
        ClinicalSampler(_toy([10, 10]), 1, 60, query=qry)


def test_random_identity_and_class_subsets():
    ds = mednist("val")
    s = ClinicalSampler(ds, 1, 2, class_identity="random", n_way=3)
    b = s.sample(10, torch.Generator().manual_seed(3))
    assert b.n_way == 3 and b.query_y.shape == (10, 6)
    fixed = ClinicalSampler(ds, 1, 2, classes=[2, 4])  # CXR vs Hand
    assert fixed.n_way == 2
    with pytest.raises(InvalidValueError, match="fixed class identity"):
        ClinicalSampler(ds, 1, 2, n_way=3)
    with pytest.raises(InvalidValueError, match="classes"):
        ClinicalSampler(ds, 1, 2, classes=[0, 0])
    with pytest.raises(DataError, match="query: expected the classes"):
        ClinicalSampler(ds, 1, 2, query=medmnist("breastmnist", "test"))


def test_reproducible_with_fixed_episodes():
    s = ClinicalSampler(medmnist("breastmnist", "train"), 5, 10, query=medmnist("breastmnist", "test"), prevalence="natural")
    a = fixed_episodes(s, 4, seed=7)
    b = fixed_episodes(s, 4, seed=7, tasks_per_batch=2)
    assert torch.equal(torch.cat([e.query_x for e in a]), torch.cat([e.query_x for e in b]))


def test_few_shot_sampler_takes_the_clinical_options():
    from bayesmeta.tasks import FewShotSampler

    sup, qry = _toy([10, 10], source="train"), _toy([30, 50], offset=1000.0, source="test")
    fs = FewShotSampler(sup, 2, 2, 10, class_identity="fixed", prevalence="natural", query=qry)
    cs = ClinicalSampler(sup, 2, 10, query=qry, prevalence="natural")
    a, b = fs.sample(3, torch.Generator().manual_seed(5)), cs.sample(3, torch.Generator().manual_seed(5))
    assert torch.equal(a.query_x, b.query_x) and torch.equal(a.query_y, b.query_y)
    with pytest.raises(InvalidValueError, match="augment_rotations"):
        FewShotSampler(sup, 2, 2, 10, augment_rotations=True, class_identity="fixed")
    with pytest.raises(DataError, match=r"class 'c0' \(label 0\) of support split 'train' has 10 examples, asked for k_shot = 11"):
        FewShotSampler(sup, 2, 11, 1, query=qry)
