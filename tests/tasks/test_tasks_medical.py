"""Bundled MedMNIST / MedNIST, the user's own npz / folders / torch datasets, and backbone checks."""

from __future__ import annotations

import hashlib
from importlib import resources

import numpy as np
import pytest
import torch

from bayesmeta.exceptions import DataError, InvalidValueError, ShapeError
from bayesmeta.models import Conv4
from bayesmeta.tasks import (
    MEDMNIST_BUNDLED,
    check_backbone_input,
    conform,
    from_torch_dataset,
    image_folder,
    medmnist,
    mednist,
    npz_dataset,
)

# Official MedMNIST v2 split sizes and class counts (medmnist/info.py and the data README).
OFFICIAL = {
    "pneumoniamnist": {"train": [1214, 3494], "val": [135, 389], "test": [234, 390]},
    "breastmnist": {"train": [147, 399], "val": [21, 57], "test": [42, 114]},
    "retinamnist": {
        "train": [486, 128, 206, 194, 66],
        "val": [54, 12, 28, 20, 6],
        "test": [174, 46, 92, 68, 20],
    },
}
SHA256 = {
    "breastmnist.npz": "3a22d2a4625e7dd8903f0f59030e81a3d0c222bece2e5e10927456cb50efdec1",
    "pneumoniamnist.npz": "e1792d3f03751cb101e99f19a63b3c1941436c988665f47853417b05be250cd8",
    "retinamnist.npz": "254915f5f0a2074665c4676356824cf4ef4a3bcab233894b4bafcaf48962bd69",
    "mednist_28x28_2000per_class.npz": "22d7a623aadb596f018f543fc100f496aff3f7d2467d872d9ed96b42969e89a8",
}


def _data(name: str):
    return resources.files("bayesmeta.tasks").joinpath("data").joinpath(name)


@pytest.mark.parametrize("fname", sorted(SHA256))
def test_bundled_files_are_the_recorded_bytes(fname):
    assert hashlib.sha256(_data(fname).read_bytes()).hexdigest() == SHA256[fname]


@pytest.mark.parametrize("name", MEDMNIST_BUNDLED)
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_medmnist_official_sizes_and_counts(name, split):
    ds = medmnist(name, split)
    assert ds.class_counts.tolist() == OFFICIAL[name][split]
    assert len(ds) == sum(OFFICIAL[name][split])
    channels = 3 if name == "retinamnist" else 1
    assert tuple(ds.example_shape) == (channels, 28, 28)
    assert ds.images.dtype == torch.float32
    assert ds.images.is_contiguous()  # channels-last strides break GroupNorm under vmap (MAML)
    assert 0.0 <= float(ds.images.min()) and float(ds.images.max()) <= 1.0
    assert ds.source == f"{name}/{split}"
    # independent route: the raw arrays with numpy
    with _data(f"{name}.npz").open("rb") as fh, np.load(fh) as d:
        raw = d[f"{split}_images"]
        lab = d[f"{split}_labels"][:, 0]
    assert torch.equal(ds.labels, torch.from_numpy(lab.astype(np.int64)))
    first = torch.from_numpy(raw[0]).float() / 255.0
    got = ds.images[0].permute(1, 2, 0) if channels == 3 else ds.images[0, 0]
    assert torch.equal(got, first)


def test_medmnist_class_names():
    assert medmnist("pneumoniamnist").class_names == ("normal", "pneumonia")
    assert medmnist("breastmnist", "test").class_names == ("malignant", "normal, benign")
    assert medmnist("retinamnist", "val").class_names == ("0", "1", "2", "3", "4")


@pytest.mark.parametrize("split,n", [("train", 1400), ("val", 200), ("test", 400)])
def test_mednist_splits(split, n):
    ds = mednist(split)
    assert ds.class_names == ("AbdomenCT", "BreastMRI", "CXR", "ChestCT", "Hand", "HeadCT")
    assert ds.class_counts.tolist() == [n] * 6
    assert tuple(ds.example_shape) == (1, 28, 28)


def test_bad_names_and_splits():
    with pytest.raises(InvalidValueError, match="name.*pneumoniamnist"):
        medmnist("dermamnist")
    with pytest.raises(InvalidValueError, match="split"):
        medmnist("breastmnist", "training")
    with pytest.raises(InvalidValueError, match="split"):
        mednist("valid")


# ------------------------------------------------------------------ conversion
def test_rgb_to_grey_matches_pil_luma():
    from PIL import Image

    rgb = medmnist("retinamnist", "val")
    grey = medmnist("retinamnist", "val", channels="grey")
    assert tuple(grey.example_shape) == (1, 28, 28)
    with _data("retinamnist.npz").open("rb") as fh, np.load(fh) as d:
        raw = d["val_images"][:5]
    pil = np.stack([np.asarray(Image.fromarray(im).convert("L")) for im in raw]) / 255.0
    # PIL rounds each pixel to a uint8 level: at most half a level (1/510) apart, plus float error
    assert np.abs(grey.images[:5, 0].numpy() - pil).max() <= 0.5 / 255 + 1e-6
    back = conform(grey, channels="rgb")
    assert tuple(back.example_shape) == (3, 28, 28)
    assert torch.equal(back.images[:, 0], back.images[:, 2])
    assert rgb.labels.tolist() == grey.labels.tolist()


def test_resize_keeps_a_constant_image_constant():
    ds = medmnist("breastmnist", "val", size=32)
    assert tuple(ds.example_shape) == (1, 32, 32)
    const = conform(ds, size=16)
    x = torch.full((2, 1, 28, 28), 0.25)
    from bayesmeta.tasks import LabelledDataset

    c = conform(LabelledDataset(x, torch.tensor([0, 1])), size=14)
    assert torch.allclose(c.images, torch.full((2, 1, 14, 14), 0.25), atol=1e-6)
    assert tuple(const.example_shape) == (1, 16, 16)
    with pytest.raises(InvalidValueError, match="size"):
        medmnist("breastmnist", "val", size=0)
    with pytest.raises(InvalidValueError, match="channels"):
        medmnist("breastmnist", "val", channels="RGB")  # type: ignore[arg-type]


# ------------------------------------------------------------------ backbone checks
def test_channel_and_size_mismatch_are_named():
    retina = medmnist("retinamnist", "val")
    with pytest.raises(ShapeError, match=r"retinamnist/val.*3 channel.*expects 1.*channels='grey'"):
        check_backbone_input(retina, Conv4(in_channels=1, out_features=5, norm="group"))
    check_backbone_input(retina, Conv4(in_channels=3, out_features=5, norm="group"))
    check_backbone_input(conform(retina, channels="grey"), Conv4(in_channels=1, out_features=5, norm="group"))
    big = medmnist("breastmnist", "val", size=32)
    with pytest.raises(ShapeError, match=r"32x32.*expects 28x28.*size=28"):
        check_backbone_input(big, Conv4(in_channels=1, out_features=2, norm="group"))
    # an embedding network without head takes any size
    check_backbone_input(big, Conv4(in_channels=1, out_features=None, norm="group"))
    grey = medmnist("breastmnist", "val")
    with pytest.raises(ShapeError, match="channels='rgb'"):
        check_backbone_input(grey, Conv4(in_channels=3, norm="group"))


# ------------------------------------------------------------------ user npz
def _write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def _medmnist_arrays(rng, c=3, n=12, hw=28, rgb=False):
    shape = (n, hw, hw, 3) if rgb else (n, hw, hw)
    out = {}
    for s in ("train", "val", "test"):
        out[f"{s}_images"] = rng.integers(0, 256, size=shape, dtype=np.uint8)
        out[f"{s}_labels"] = (np.arange(n) % c).astype(np.uint8)[:, None]
    return out


def test_user_npz_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    arrays = _medmnist_arrays(rng, c=3, rgb=True)
    p = _write_npz(tmp_path / "derma_like.npz", **arrays)
    ds = medmnist(path=p, split="test")
    assert ds.n_classes == 3 and tuple(ds.example_shape) == (3, 28, 28)
    assert torch.equal(ds.images[3].permute(1, 2, 0), torch.from_numpy(arrays["test_images"][3]).float() / 255)
    assert ds.source == "derma_like.npz/test"
    named = npz_dataset(p, "val", class_names=["a", "b", "c"], channels="grey")
    assert named.class_names == ("a", "b", "c") and tuple(named.example_shape) == (1, 28, 28)


def test_user_npz_bad_input(tmp_path):
    rng = np.random.default_rng(1)
    arrays = _medmnist_arrays(rng, c=2)
    p = _write_npz(tmp_path / "nokeys.npz", images=arrays["train_images"], labels=arrays["train_labels"])
    with pytest.raises(DataError, match=r"missing key.*train_images.*this file has \['images', 'labels'\]"):
        medmnist(path=p)
    bad = dict(arrays)
    bad["val_labels"] = np.full((12, 1), 7, dtype=np.uint8)
    p2 = _write_npz(tmp_path / "bad_labels.npz", **bad)
    with pytest.raises(InvalidValueError, match=r"labels outside the 2 classes.*\[7\]"):
        npz_dataset(p2, "val", class_names=["neg", "pos"])
    # without names, classes count over all splits: the train split then lacks classes 2..7
    with pytest.raises(DataError, match=r"train.*no examples of class"):
        npz_dataset(p2, "train")
    multi = dict(arrays)
    multi["train_labels"] = np.zeros((12, 14), dtype=np.uint8)
    p3 = _write_npz(tmp_path / "multilabel.npz", **multi)
    with pytest.raises(ShapeError, match="multi-label"):
        npz_dataset(p3, "train")
    with pytest.raises(DataError, match="not a file"):
        npz_dataset(tmp_path / "missing.npz")
    (tmp_path / "garbage.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable"):
        npz_dataset(tmp_path / "garbage.npz")


# ------------------------------------------------------------------ folders and torch datasets
def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(2)
    imgs = {}
    for cname in ("benign", "malignant"):
        (tmp_path / cname).mkdir()
        for i in range(3):
            a = rng.integers(0, 256, size=(20, 20), dtype=np.uint8)
            Image.fromarray(a).save(tmp_path / cname / f"{i}.png")
            imgs[(cname, i)] = a
    (tmp_path / "benign" / "notes.txt").write_text("ignored")
    ds = image_folder(tmp_path)
    assert ds.class_names == ("benign", "malignant")
    assert ds.class_counts.tolist() == [3, 3]
    assert tuple(ds.example_shape) == (1, 20, 20)
    assert torch.equal(ds.images[4, 0], torch.from_numpy(imgs[("malignant", 1)]).float() / 255)
    rgb28 = image_folder(tmp_path, channels="rgb", size=28)
    assert tuple(rgb28.example_shape) == (3, 28, 28)
    Image.fromarray(rng.integers(0, 256, size=(24, 24), dtype=np.uint8)).save(tmp_path / "benign" / "big.png")
    with pytest.raises(ShapeError, match="different shapes.*size="):
        image_folder(tmp_path)
    assert tuple(image_folder(tmp_path, size=28).example_shape) == (1, 28, 28)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(DataError, match="empty_class.*no image files"):
        image_folder(tmp_path, size=28)
    with pytest.raises(DataError, match="not a folder"):
        image_folder(tmp_path / "nope")


def test_from_torch_dataset():
    class Toy(torch.utils.data.Dataset):
        classes = ["normal", "abnormal"]

        def __len__(self):
            return 6

        def __getitem__(self, i):
            return torch.full((1, 28, 28), i / 10.0), torch.tensor(i % 2)

    ds = from_torch_dataset(Toy())
    assert ds.class_names == ("normal", "abnormal")
    assert ds.labels.tolist() == [0, 1, 0, 1, 0, 1]
    assert torch.allclose(ds.images[3], torch.full((1, 28, 28), 0.3))
    rgb = from_torch_dataset(Toy(), channels="rgb", size=14)
    assert tuple(rgb.example_shape) == (3, 14, 14)

    class Bad(Toy):
        def __getitem__(self, i):
            return torch.zeros(1, 28, 28), "cat"

    with pytest.raises(InvalidValueError, match=r"dataset\[0\].*integer class label"):
        from_torch_dataset(Bad())
