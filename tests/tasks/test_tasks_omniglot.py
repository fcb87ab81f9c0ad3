"""The bundled Omniglot: contents, polarity, the Vinyals split and rotations within splits."""

from __future__ import annotations

import pytest
import torch

from bayesmeta.exceptions import InvalidValueError
from bayesmeta.tasks import FewShotSampler, LabelledDataset, omniglot, omniglot_splits


@pytest.fixture(scope="module")
def plain() -> dict[str, LabelledDataset]:
    return omniglot_splits(rotations=False)


def base_name(name: str) -> str:
    return name.rsplit("/rot", 1)[0]


def test_all_characters_load_with_ink_high() -> None:
    ds = omniglot("all", rotations=False)
    assert ds.n_classes == 1623 and len(ds) == 32460
    assert ds.images.shape == (32460, 1, 28, 28) and ds.images.dtype == torch.float32
    assert float(ds.images.min()) >= 0.0 and float(ds.images.max()) <= 1.0
    assert float(ds.images.mean()) < 0.5  # mostly background, which is 0 after inversion
    assert float(ds.images[:, :, 0, 0].mean()) < 0.05  # corners are background
    assert torch.all(ds.class_counts == 20)
    assert len(set(ds.class_names)) == 1623
    assert {n.split("/")[0] for n in ds.class_names}.__len__() == 50


def test_vinyals_split(plain: dict[str, LabelledDataset]) -> None:
    assert {k: v.n_classes for k, v in plain.items()} == {"train": 1028, "val": 172, "test": 423}
    names = {k: set(v.class_names) for k, v in plain.items()}
    assert not (names["train"] & names["val"] or names["train"] & names["test"] or names["val"] & names["test"])
    assert "Gurmukhi/character42" in names["test"] and "Gurmukhi/character41" in names["train"]
    assert {n.split("/")[0] for n in names["val"]} == {
        "Armenian", "Bengali", "Early_Aramaic", "Hebrew", "Mkhedruli_(Georgian)"
    }
    assert "Tibetan/character01" in names["test"] and "Latin/character01" in names["train"]
    trainval = omniglot("trainval", rotations=False)
    assert set(trainval.class_names) == names["train"] | names["val"]
    # same split on a second load (fixed names, no randomness)
    assert omniglot("test", rotations=False).class_names == plain["test"].class_names


def test_rotations_stay_in_their_split(plain: dict[str, LabelledDataset]) -> None:
    test = omniglot("test", rotations=True)
    assert test.n_classes == 4 * 423 and len(test) == 4 * 423 * 20
    assert {base_name(n) for n in test.class_names} == set(plain["test"].class_names)
    # the rotated copies of a test character are rotations of that character's drawings
    c = plain["test"].class_names.index("Tibetan/character07")
    base = plain["test"].images[plain["test"].labels == c]
    for r, suffix in enumerate(("rot000", "rot090", "rot180", "rot270")):
        k = test.class_names.index(f"Tibetan/character07/{suffix}")
        assert torch.equal(test.images[test.labels == k], torch.rot90(base, r, dims=(-2, -1)))


def test_omniglot_episodes(plain: dict[str, LabelledDataset]) -> None:
    test = plain["test"]
    sampler = FewShotSampler(test, n_way=20, k_shot=1, n_query=5, augment_rotations=True)
    batch = sampler.sample(4, torch.Generator().manual_seed(0))
    assert batch.support_x.shape == (4, 20, 1, 28, 28) and batch.query_x.shape == (4, 100, 1, 28, 28)
    assert int(batch.support_y.max()) == 19 and int(batch.query_y.min()) == 0
    # no (class, drawing) pair in both halves of an episode; with rotations two classes of an
    # episode may be rotations of one character, so pairs, not drawings, are what must differ
    ep = sampler.sample_indices(16, torch.Generator().manual_seed(0))
    for t in range(16):
        c = ep.classes[t].unsqueeze(-1)
        s = set(zip(c.expand_as(ep.support[t]).flatten().tolist(), ep.support[t].flatten().tolist(), strict=True))
        q = set(zip(c.expand_as(ep.query[t]).flatten().tolist(), ep.query[t].flatten().tolist(), strict=True))
        assert len(s) == 20 and len(q) == 100 and not s & q
    plain_ep = FewShotSampler(test, n_way=20, k_shot=1, n_query=5).sample_indices(16, torch.Generator().manual_seed(0))
    for t in range(16):
        drawings = torch.cat([plain_ep.support[t].flatten(), plain_ep.query[t].flatten()])
        assert drawings.unique().numel() == 120
    with pytest.raises(Exception, match="k_shot \\+ n_query"):
        FewShotSampler(test, n_way=5, k_shot=5, n_query=16)


def test_bad_split_name() -> None:
    with pytest.raises(InvalidValueError, match="split"):
        omniglot("validation")  # type: ignore[arg-type]


def test_config_train_split_trainval_trains_on_1200_characters_and_keeps_val_and_test() -> None:
    from bayesmeta.config import build_task_source, resolve_config
    from bayesmeta.exceptions import ConfigError

    base = {"method": {"name": "protonet"}, "model": {"name": "conv4", "hidden": 8},
            "tasks": {"name": "omniglot", "n_way": 5, "k_shot": 1, "n_query": 1}}
    default = resolve_config(base)
    trainval = resolve_config({**base, "tasks": {**base["tasks"], "train_split": "trainval"}})

    def names(cfg: dict, split: str) -> set[str]:
        return set(build_task_source(cfg, split).dataset.class_names)

    train, val, test = (names(default, split) for split in ("train", "val", "test"))
    assert len(train) == 1028
    both = names(trainval, "train")
    assert both == train | val and len(both) == 1200
    # only meta-training changes; validation episodes come with a warning that they are optimistic
    assert names(trainval, "test") == test
    with pytest.warns(UserWarning, match=r"^tasks.train_split: 'trainval' meta-trains on the validation characters"):
        assert names(trainval, "val") == val
    assert test.isdisjoint(both)
    with pytest.raises(ConfigError, match=r"^tasks.train_split: expected one of 'train', 'trainval', got 'all'"):
        resolve_config({**base, "tasks": {**base["tasks"], "train_split": "all"}})
