"""Medical-imaging datasets: bundled MedMNIST / MedNIST, and the user's own npz files or folders.

Every loader returns a :class:`~bayesmeta.tasks.datasets.LabelledDataset` of float32 images in
``[0, 1]`` laid out ``[N, C, H, W]`` (C = 1 for grey, 3 for RGB) with int64 labels, so the same
samplers and learners work on them as on Omniglot. Nothing is downloaded: the bundled files are
read through ``importlib.resources`` (see ``bayesmeta/tasks/data/README.md`` for provenance and
licences).

- :func:`medmnist`: the bundled ``pneumoniamnist``, ``breastmnist`` and ``retinamnist`` (the
  official 28x28 MedMNIST v2 files, byte-identical), or any MedMNIST-format ``.npz`` by ``path``
  (keys ``train_images``/``train_labels``/``val_...``/``test_...``; a DermaMNIST or a hospital's
  own export).
- :func:`mednist`: the bundled 6-class MedNIST subset (2,000 images per class, split 7:1:2).
- :func:`image_folder`: one sub-folder per class of image files (read with Pillow).
- :func:`from_torch_dataset`: any map-style torch ``Dataset`` yielding ``(image, label)``
  (torchvision ``ImageFolder``, a MONAI dataset).

Channels and size are never changed silently: pass ``channels="grey"|"rgb"`` and/or ``size=28``
to convert, and :func:`check_backbone_input` refuses a dataset whose examples do not fit a
backbone's ``input_shape``, naming the option that fixes it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bayesmeta.exceptions import DataError, InvalidValueError, ShapeError
from bayesmeta.tasks.datasets import LabelledDataset

__all__ = [
    "MEDMNIST_BUNDLED",
    "MEDICAL_SPLITS",
    "MEDNIST_CLASSES",
    "medmnist",
    "mednist",
    "npz_dataset",
    "image_folder",
    "from_torch_dataset",
    "conform",
    "check_backbone_input",
]

#: Names of the MedMNIST datasets that ship inside the package.
MEDMNIST_BUNDLED: tuple[str, ...] = ("pneumoniamnist", "breastmnist", "retinamnist")
#: Splits of a MedMNIST-format file.
MEDICAL_SPLITS: tuple[str, ...] = ("train", "val", "test")
#: The six MedNIST classes in label order.
MEDNIST_CLASSES: tuple[str, ...] = ("AbdomenCT", "BreastMRI", "CXR", "ChestCT", "Hand", "HeadCT")

Channels = Literal["grey", "rgb"]
_MEDNIST_FILE = "mednist_28x28_2000per_class.npz"
_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")
# ITU-R BT.601 luma weights (what PIL's convert("L") uses), for RGB -> grey
_LUMA = (0.299, 0.587, 0.114)


def _data_root() -> Any:
    return resources.files("bayesmeta.tasks").joinpath("data")


def _bundled_class_names(name: str) -> tuple[str, ...]:
    with _data_root().joinpath("medmnist_classes.json").open("r") as fh:
        info = json.load(fh)
    labels = info[name]["label"]
    return tuple(labels[str(i)] for i in range(len(labels)))


def _check_split(split: str) -> str:
    if split not in MEDICAL_SPLITS:
        raise InvalidValueError(f"split: expected one of {list(MEDICAL_SPLITS)}, got {split!r}")
    return split


# ------------------------------------------------------------------------------ conversion
def _to_nchw(images: np.ndarray, where: str) -> torch.Tensor:
    """uint8/float ``[N, H, W]``, ``[N, H, W, C]`` or ``[N, C, H, W]`` -> float32 ``[N, C, H, W]`` in [0, 1]."""
    if images.ndim == 3:
        x = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1)
    elif images.ndim == 4 and images.shape[-1] in (1, 3, 4) and images.shape[1] not in (1, 3):
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
    elif images.ndim == 4 and images.shape[1] in (1, 3):
        x = torch.from_numpy(np.ascontiguousarray(images))
    else:
        raise ShapeError(
            f"{where}: expected images [N, H, W] (grey), [N, H, W, C] or [N, C, H, W] with C in 1, 3, "
            f"got shape {list(images.shape)}"
        )
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0)
    if x.is_floating_point():
        x = x.to(torch.float32)
        if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
            raise InvalidValueError(
                f"{where}: expected uint8 images or floats in [0, 1], got floats in "
                f"[{float(x.min()):.3g}, {float(x.max()):.3g}]"
            )
        return x
    raise InvalidValueError(f"{where}: expected uint8 or floating-point images, got dtype {images.dtype}")


def _convert_images(x: torch.Tensor, channels: Channels | None, size: int | None) -> torch.Tensor:
    """Channel conversion (grey <-> RGB) then resize of ``[N, C, H, W]`` images."""
    if channels is not None:
        if channels not in ("grey", "rgb"):
            raise InvalidValueError(f"channels: expected 'grey', 'rgb' or None, got {channels!r}")
        c = x.shape[1]
        if channels == "grey" and c == 3:
            w = torch.tensor(_LUMA, dtype=x.dtype).view(1, 3, 1, 1)
            x = (x * w).sum(1, keepdim=True)
        elif channels == "rgb" and c == 1:
            x = x.expand(-1, 3, -1, -1).contiguous()
        elif c not in (1, 3):
            raise ShapeError(f"channels: can only convert 1- or 3-channel images, got {c} channels")
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise InvalidValueError(f"size: expected a positive integer (pixels per side) or None, got {size!r}")
        if tuple(x.shape[-2:]) != (size, size):
            # antialiased bilinear: a downsampled image keeps its content instead of aliasing
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            x = x.clamp_(0.0, 1.0)
    return x


def _labels_1d(labels: np.ndarray, where: str) -> np.ndarray:
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise ShapeError(
            f"{where}: expected one class label per image, shape [N] or [N, 1], got {list(labels.shape)} "
            f"(multi-label files such as ChestMNIST are not single-label classification)"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        if np.issubdtype(labels.dtype, np.floating) and np.all(np.mod(labels, 1) == 0):
            labels = labels.astype(np.int64)
        else:
            raise InvalidValueError(f"{where}: expected integer class labels, got dtype {labels.dtype}")
    return labels.astype(np.int64)


def _make_dataset(
    x: torch.Tensor, y: np.ndarray, names: Sequence[str], where: str
) -> LabelledDataset:
    n_classes = len(names)
    if y.size and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        bad = sorted({int(v) for v in y[(y < 0) | (y >= n_classes)]})[:10]
        raise InvalidValueError(
            f"{where}: labels outside the {n_classes} classes [0, {n_classes}) ({list(names)}): got {bad}"
        )
    counts = np.bincount(y, minlength=n_classes)
    empty = [names[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        raise DataError(f"{where}: no examples of class(es) {empty}; every class needs at least one in each split")
    return LabelledDataset(x, torch.from_numpy(y), list(names), source=where)


def conform(dataset: LabelledDataset, channels: Channels | None = None, size: int | None = None) -> LabelledDataset:
    """A copy of an image dataset converted to ``channels`` and/or resized to ``size`` x ``size``.

    Args:
        dataset: images ``[N, C, H, W]`` with C in 1 or 3.
        channels: ``"grey"`` (RGB -> luma, ITU-R BT.601 weights), ``"rgb"`` (grey replicated into
            three channels) or None (unchanged).
        size: side length after an antialiased bilinear resize, or None (unchanged).
    """
    if dataset.images.dim() != 4:
        raise ShapeError(f"dataset: expected images [N, C, H, W], got example shape {list(dataset.example_shape)}")
    x = _convert_images(dataset.images, channels, size)
    return LabelledDataset(x, dataset.labels, list(dataset.class_names), source=dataset.source)


# ------------------------------------------------------------------------------ npz
def _read_npz(fh: Any, split: str, where: str) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    try:
        d = np.load(fh, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"{where}: not a readable .npz file ({e})") from None
    with d:
        need = (f"{split}_images", f"{split}_labels")
        missing = [k for k in need if k not in d.files]
        if missing:
            raise DataError(
                f"{where}: missing key(s) {missing} for split {split!r}; a MedMNIST-format npz has "
                f"train_images, train_labels, val_images, val_labels, test_images, test_labels; "
                f"this file has {sorted(d.files)}"
            )
        images, labels = d[need[0]], d[need[1]]
        names = [str(n) for n in d["class_names"]] if "class_names" in d.files else None
    return images, labels, names


def npz_dataset(
    path: str | Path,
    split: str = "train",
    *,
    class_names: Sequence[str] | None = None,
    channels: Channels | None = None,
    size: int | None = None,
) -> LabelledDataset:
    """One split of a MedMNIST-format ``.npz`` file (a user's own data, DermaMNIST, ...).

    Args:
        path: the ``.npz`` with ``{split}_images`` (uint8 ``[N, H, W]`` grey or ``[N, H, W, 3]``
            RGB, or floats in [0, 1]) and ``{split}_labels`` (``[N]`` or ``[N, 1]`` integers).
        split: ``"train"``, ``"val"`` or ``"test"``.
        class_names: names of the C classes; default the file's ``class_names`` array, else
            ``"0" .. "C-1"`` with C one more than the largest label over all splits.
        channels: optional conversion (see :func:`conform`).
        size: optional conversion (see :func:`conform`).

    Raises:
        DataError: a missing file or key, or a class without examples in this split.
        InvalidValueError: labels outside the classes, or a bad split name.
        ShapeError: multi-label labels or images of an unknown layout.
    """
    _check_split(split)
    p = Path(path)
    where = f"{p.name}/{split}"
    if not p.is_file():
        raise DataError(f"path: {str(p)!r} is not a file")
    images, labels, file_names = _read_npz(p, split, where)
    names = list(class_names) if class_names is not None else file_names
    if names is None:
        # classes are numbered over all splits, so a split missing a class is reported, not renumbered
        highest = -1
        with np.load(p, allow_pickle=False) as d:
            for s in MEDICAL_SPLITS:
                if f"{s}_labels" in d.files and d[f"{s}_labels"].size:
                    highest = max(highest, int(_labels_1d(d[f"{s}_labels"], f"{p.name}/{s}").max()))
        names = [str(i) for i in range(highest + 1)]
    y = _labels_1d(labels, f"{where} labels")
    if y.shape[0] != images.shape[0]:
        raise ShapeError(f"{where}: {images.shape[0]} images but {y.shape[0]} labels")
    x = _convert_images(_to_nchw(images, f"{where} images"), channels, size)
    return _make_dataset(x, y, names, where)


def medmnist(
    name: str | None = None,
    split: str = "train",
    path: str | Path | None = None,
    *,
    channels: Channels | None = None,
    size: int | None = None,
) -> LabelledDataset:
    """One split of a MedMNIST dataset: bundled by ``name``, or any MedMNIST-format file by ``path``.

    Bundled (official 28x28 files; train / val / test sizes and class counts):

    - ``pneumoniamnist``: paediatric chest X-ray, 0 = normal, 1 = pneumonia; 4708 / 524 / 624.
    - ``breastmnist``: breast ultrasound, 0 = malignant, 1 = normal, benign; 546 / 78 / 156.
    - ``retinamnist``: fundus, diabetic-retinopathy grade 0-4, RGB; 1080 / 120 / 400.

    Args:
        name: a bundled dataset (see :data:`MEDMNIST_BUNDLED`); None when ``path`` is given.
        split: ``"train"``, ``"val"`` or ``"test"`` (the official MedMNIST splits).
        path: a MedMNIST-format ``.npz`` to read instead (see :func:`npz_dataset`).
        channels: optional conversion (see :func:`conform`); by default images keep their
            channels (1 grey, 3 RGB).
        size: optional conversion (see :func:`conform`); by default images keep their 28x28
            size.

    Returns:
        A :class:`LabelledDataset` of float32 ``[N, C, 28, 28]`` images in [0, 1].
    """
    if path is not None:
        return npz_dataset(path, split, channels=channels, size=size)
    if name not in MEDMNIST_BUNDLED:
        raise InvalidValueError(
            f"name: expected one of the bundled MedMNIST datasets {list(MEDMNIST_BUNDLED)} "
            f"(or path= to a MedMNIST-format .npz), got {name!r}"
        )
    _check_split(split)
    where = f"{name}/{split}"
    with _data_root().joinpath(f"{name}.npz").open("rb") as fh:
        images, labels, _ = _read_npz(fh, split, where)
    x = _convert_images(_to_nchw(images, where), channels, size)
    return _make_dataset(x, _labels_1d(labels, where), _bundled_class_names(name), where)


def mednist(split: str = "train", *, channels: Channels | None = None, size: int | None = None) -> LabelledDataset:
    """One split of the bundled MedNIST subset: 6 classes, 1,400 / 200 / 400 images per class.

    Classes (label order): AbdomenCT, BreastMRI, CXR, ChestCT, Hand, HeadCT; 28x28 grey.

    Args:
        split: ``"train"`` (8,400 images), ``"val"`` (1,200) or ``"test"`` (2,400).
        channels: optional conversion (see :func:`conform`).
        size: optional conversion (see :func:`conform`).
    """
    _check_split(split)
    where = f"mednist/{split}"
    with _data_root().joinpath(_MEDNIST_FILE).open("rb") as fh:
        images, labels, names = _read_npz(fh, split, where)
    x = _convert_images(_to_nchw(images, where), channels, size)
    return _make_dataset(x, _labels_1d(labels, where), names or list(MEDNIST_CLASSES), where)


# ------------------------------------------------------------------------------ folders, torch
def image_folder(
    root: str | Path,
    *,
    channels: Channels | None = None,
    size: int | None = None,
    extensions: Sequence[str] = _IMAGE_EXTENSIONS,
) -> LabelledDataset:
    """Images in one sub-folder per class (``root/<class>/<image>``), classes in sorted order.

    Args:
        root: the folder; its sub-folders are the classes (label = position in sorted order).
        channels: ``"grey"`` or ``"rgb"``; None keeps what the files hold, which must then be
            the same mode in every file.
        size: resize every image to ``size`` x ``size``; None requires them all to be one size.
        extensions: file suffixes read (case-insensitive); other files are ignored.

    Raises:
        DataError: a missing folder, no class sub-folders, an empty class, an unreadable image.
        ShapeError: images of different sizes or channels without ``size``/``channels``.
    """
    from PIL import Image, UnidentifiedImageError  # Pillow comes with matplotlib

    r = Path(root)
    if not r.is_dir():
        raise DataError(f"root: {str(r)!r} is not a folder")
    classes = sorted(p.name for p in r.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"root: {str(r)!r} has no class sub-folders (expected root/<class>/<image files>)")
    exts = tuple(e.lower() for e in extensions)
    arrays: list[torch.Tensor] = []
    labels: list[int] = []
    for c, cname in enumerate(classes):
        files = sorted(f for f in (r / cname).iterdir() if f.is_file() and f.suffix.lower() in exts)
        if not files:
            raise DataError(f"root: class folder {cname!r} in {str(r)!r} holds no image files ({', '.join(exts)})")
        for f in files:
            try:
                with Image.open(f) as im:
                    mode = im.mode
                    if channels == "grey" or (channels is None and mode in ("L", "1", "I", "I;16", "F")):
                        arr = np.array(im.convert("L"))
                    else:
                        arr = np.array(im.convert("RGB"))
            except (UnidentifiedImageError, OSError) as e:
                raise DataError(f"root: cannot read image {str(f)!r}: {e}") from None
            t = _to_nchw(arr[None], str(f))
            if size is not None:
                t = _convert_images(t, None, size)
            arrays.append(t[0])
            labels.append(c)
    shapes = {tuple(a.shape) for a in arrays}
    if len(shapes) > 1:
        raise ShapeError(
            f"root: images of different shapes {sorted(shapes)[:4]} in {str(r)!r}; pass size= "
            f"(and channels=) to convert them to one shape"
        )
    x = _convert_images(torch.stack(arrays), channels, None)
    return _make_dataset(x, np.asarray(labels, dtype=np.int64), classes, r.name)


def from_torch_dataset(
    dataset: Any,
    *,
    class_names: Sequence[str] | None = None,
    channels: Channels | None = None,
    size: int | None = None,
) -> LabelledDataset:
    """Read a map-style torch ``Dataset`` of ``(image, label)`` pairs into memory.

    Images may be tensors ``[C, H, W]`` / ``[H, W]`` (uint8, or floats in [0, 1]), numpy arrays
    ``[H, W]`` / ``[H, W, C]``, or PIL images (torchvision ``ImageFolder`` without a transform).
    Labels are ints or 0-d tensors; ``class_names`` defaults to the dataset's ``classes``
    attribute when it has one.
    """
    n = len(dataset)
    if n == 0:
        raise DataError("dataset: expected at least one (image, label) pair, got an empty dataset")
    images: list[torch.Tensor] = []
    labels: list[int] = []
    for i in range(n):
        item = dataset[i]
        if not isinstance(item, tuple | list) or len(item) < 2:
            raise DataError(f"dataset[{i}]: expected an (image, label) pair, got {type(item).__name__}")
        img, lab = item[0], item[1]
        if hasattr(img, "convert") and not isinstance(img, torch.Tensor):  # a PIL image
            img = np.array(img.convert("L" if img.mode in ("L", "1", "I", "F") or channels == "grey" else "RGB"))
        if isinstance(img, np.ndarray):
            arr = img
            t = _to_nchw(arr[None], f"dataset[{i}] image")
        elif isinstance(img, torch.Tensor):
            arr = img.detach().cpu().numpy()
            t = _to_nchw(arr[None] if arr.ndim == 2 else arr[None], f"dataset[{i}] image")
        else:
            raise DataError(f"dataset[{i}]: expected a tensor, array or PIL image, got {type(img).__name__}")
        if size is not None:
            t = _convert_images(t, None, size)
        images.append(t[0])
        try:
            labels.append(int(lab))
        except (TypeError, ValueError):
            raise InvalidValueError(f"dataset[{i}]: expected an integer class label, got {lab!r}") from None
    shapes = {tuple(a.shape) for a in images}
    if len(shapes) > 1:
        raise ShapeError(f"dataset: images of different shapes {sorted(shapes)[:4]}; pass size= and channels=")
    x = _convert_images(torch.stack(images), channels, None)
    names = class_names if class_names is not None else getattr(dataset, "classes", None)
    y = np.asarray(labels, dtype=np.int64)
    if names is None:
        names = [str(i) for i in range(int(y.max()) + 1)]
    return _make_dataset(x, y, [str(s) for s in names], type(dataset).__name__)


# ------------------------------------------------------------------------------ backbone check
def check_backbone_input(dataset: LabelledDataset | torch.Size | Sequence[int], backbone: nn.Module) -> None:
    """Refuse a dataset whose examples do not fit ``backbone.input_shape``, naming the fix.

    Args:
        dataset: a dataset, or the shape of one example ``[C, H, W]``.
        backbone: a model with an ``input_shape`` attribute (``Conv4``: ``(in_channels, 28, 28)``
            with a head, ``(in_channels, *, *)`` without); models without one are not checked.

    Raises:
        ShapeError: a channel mismatch (suggesting ``channels="grey"``/``"rgb"`` or
            ``in_channels``) or a size mismatch (suggesting ``size=``).
    """
    want = getattr(backbone, "input_shape", None)
    shape = tuple(dataset.example_shape if isinstance(dataset, LabelledDataset) else dataset)
    if want is None:
        return
    src = (dataset.source if isinstance(dataset, LabelledDataset) else None) or "dataset"
    name = type(backbone).__name__
    if len(want) == 3 and len(shape) == 3:
        if want[0] is not None and want[0] != shape[0]:
            conv = {1: "'grey'", 3: "'rgb'"}.get(int(want[0]), f"{want[0]} channels")
            raise ShapeError(
                f"{src}: images have {shape[0]} channel(s) but the backbone {name} expects {want[0]} "
                f"(input_shape {list(want)}); convert with channels={conv} or build the backbone with "
                f"in_channels={shape[0]}"
            )
        if any(w is not None and w != g for w, g in zip(want[1:], shape[1:])):
            raise ShapeError(
                f"{src}: images are {shape[1]}x{shape[2]} but the backbone {name} expects "
                f"{want[1]}x{want[2]}; resize with size={want[1]}"
            )
        return
    if len(want) != len(shape) or any(w is not None and w != g for w, g in zip(want, shape)):
        raise ShapeError(f"{src}: examples of shape {list(shape)} do not fit the backbone {name} (input_shape {list(want)})")
