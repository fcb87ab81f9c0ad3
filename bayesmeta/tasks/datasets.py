"""Labelled example collections for few-shot classification, and the bundled Omniglot.

A :class:`LabelledDataset` is a flat ``[N, *shape]`` float tensor of examples with ``[N]`` int64
class labels. Few-shot episodes are drawn from it by
:class:`~bayesmeta.tasks.sampler.FewShotSampler`; meta-train / meta-test separation is a split of
the *classes* (:meth:`LabelledDataset.split_classes`), never of the examples.

Omniglot (Lake et al., 2015) ships inside the package as two ``.npz`` files (28x28 images; see
``bayesmeta/tasks/data/README.md`` and ``docs/datasets.md``) and is loaded by :func:`omniglot`
with the split of Vinyals et al. (2016), the one used by Matching Networks, Prototypical
Networks and MAML:

- ``test``: the last 423 characters of the background + evaluation concatenation in alphabetical
  order, i.e. ``Gurmukhi/character42``-``45`` and the evaluation alphabets Kannada, Keble,
  Malayalam, Manipuri, Mongolian, Old_Church_Slavonic_(Cyrillic), Oriya, Sylheti,
  Syriac_(Serto), Tengwar, Tibetan and ULOG;
- ``val``: the 172 characters of the background alphabets Armenian, Bengali, Early_Aramaic,
  Hebrew and Mkhedruli_(Georgian);
- ``train``: the other 1028 characters (``trainval`` = train + val = 1200).

The split is a fixed list of names, not a random draw, so it is the same on every machine. With
``rotations=True`` every character's 90/180/270-degree rotations become new classes *after* the
split, so a character's rotated copies stay in its split (4112 / 688 / 1692 classes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Literal

import numpy as np
import torch

from bayesmeta._validation import describe
from bayesmeta.exceptions import DataError, InvalidValueError, ShapeError

__all__ = ["LabelledDataset", "omniglot", "omniglot_splits", "OMNIGLOT_SPLITS"]

#: Names of the Omniglot splits :func:`omniglot` accepts.
OMNIGLOT_SPLITS: tuple[str, ...] = ("train", "val", "test", "trainval", "all")

OmniglotSplit = Literal["train", "val", "test", "trainval", "all"]

# Vinyals et al. (2016) split, as distributed with Prototypical Networks (splits/vinyals/*.txt).
_VAL_ALPHABETS = frozenset(
    {"Armenian", "Bengali", "Early_Aramaic", "Hebrew", "Mkhedruli_(Georgian)"}
)
_TEST_ALPHABETS = frozenset(
    {
        "Kannada", "Keble", "Malayalam", "Manipuri", "Mongolian", "Old_Church_Slavonic_(Cyrillic)",
        "Oriya", "Sylheti", "Syriac_(Serto)", "Tengwar", "Tibetan", "ULOG",
    }
)
_TEST_EXTRA_CHARACTERS = frozenset(f"Gurmukhi/character{i}" for i in (42, 43, 44, 45))
_SPLIT_SIZES = {"train": 1028, "val": 172, "test": 423}
_OMNIGLOT_FILES = ("omniglot_background_28x28.npz", "omniglot_evaluation_28x28.npz")


class LabelledDataset:
    """Examples with integer class labels, from which few-shot episodes are drawn.

    Args:
        images: ``[N, *shape]`` floating-point examples (e.g. ``[N, 1, 28, 28]`` images).
        labels: ``[N]`` int64 class indices in ``[0, C)``; every class needs at least one example.
        class_names: optional list of C names; C is ``max(labels) + 1`` when it is ``None``.
        source: optional label of where the examples come from (``"pneumoniamnist/val"``), used
            by samplers to name the split in their error messages.

    Raises:
        ShapeError: ``images``/``labels`` of the wrong rank or with different N.
        InvalidValueError: non-float images, non-integer or out-of-range labels.
        DataError: a class without any example.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        class_names: Sequence[str] | None = None,
        source: str | None = None,
    ) -> None:
        if not isinstance(images, torch.Tensor) or images.dim() < 2:
            got = describe(images) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ShapeError(f"images: expected a tensor [N, *shape] with at least 2 dims, got {got}")
        if not images.is_floating_point():
            raise InvalidValueError(f"images: expected a floating-point tensor, got {describe(images)}")
        if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.shape[0] != images.shape[0]:
            got = describe(labels) if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise ShapeError(f"labels: expected a 1-d tensor [N] with N = {images.shape[0]}, got {got}")
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise InvalidValueError(f"labels: expected integer class indices, got {describe(labels)}")
        if labels.numel() == 0:
            raise DataError("images: expected at least one example, got N = 0")
        labels = labels.to(torch.int64)
        lo, hi = int(labels.min()), int(labels.max())
        n_classes = hi + 1 if class_names is None else len(class_names)
        if lo < 0 or hi >= n_classes:
            raise InvalidValueError(
                f"labels: expected values in [0, {n_classes}) (one per class name), got [{lo}, {hi}]"
            )
        counts = torch.bincount(labels.cpu(), minlength=n_classes)
        empty = (counts == 0).nonzero().flatten()
        if empty.numel():
            raise DataError(
                f"labels: expected at least one example of every class in [0, {n_classes}), "
                f"got none for class(es) {empty.tolist()[:10]}"
            )
        self.images = images
        self.labels = labels
        self.class_names: tuple[str, ...] = (
            tuple(str(i) for i in range(n_classes)) if class_names is None else tuple(class_names)
        )
        self._counts = counts
        self.source = source

    # ------------------------------------------------------------ properties
    @property
    def n_classes(self) -> int:
        """C, the number of classes."""
        return len(self.class_names)

    @property
    def example_shape(self) -> torch.Size:
        """The shape of one example, ``images.shape[1:]``."""
        return self.images.shape[1:]

    @property
    def class_counts(self) -> torch.Tensor:
        """``[C]`` int64, the number of examples of each class (on the CPU)."""
        return self._counts.clone()

    def __len__(self) -> int:
        return self.images.shape[0]

    def __repr__(self) -> str:
        return (
            f"LabelledDataset(N={len(self)}, C={self.n_classes}, "
            f"example_shape={list(self.example_shape)}, dtype={self.images.dtype})"
        )

    # ------------------------------------------------------------ class subsets
    def subset_classes(self, class_ids: Sequence[int] | torch.Tensor) -> LabelledDataset:
        """The examples of the given classes, relabelled ``0..k-1`` in the order given.

        Args:
            class_ids: k distinct class indices in ``[0, C)``.

        Returns:
            A new dataset with k classes (examples keep their relative order).
        """
        ids = torch.as_tensor(class_ids, dtype=torch.int64).flatten()
        if ids.numel() == 0:
            raise InvalidValueError("class_ids: expected at least one class index, got none")
        if int(ids.min()) < 0 or int(ids.max()) >= self.n_classes:
            raise InvalidValueError(
                f"class_ids: expected indices in [0, {self.n_classes}), got [{int(ids.min())}, {int(ids.max())}]"
            )
        if ids.unique().numel() != ids.numel():
            raise InvalidValueError("class_ids: expected distinct class indices, got repeats")
        new_label = torch.full((self.n_classes,), -1, dtype=torch.int64)
        new_label[ids] = torch.arange(ids.numel())
        relabelled = new_label.to(self.labels.device)[self.labels]
        keep = relabelled >= 0
        names = [self.class_names[i] for i in ids.tolist()]
        return LabelledDataset(self.images[keep], relabelled[keep], names, source=self.source)

    def split_classes(
        self,
        sizes: Mapping[str, int],
        generator: torch.Generator | None = None,
        shuffle: bool = True,
    ) -> dict[str, LabelledDataset]:
        """Partition the classes into disjoint named splits, e.g. ``{"train": 60, "test": 20}``.

        Args:
            sizes: number of classes of each split, in order; the total may not exceed C (classes
                left over are dropped).
            generator: randomness of the class permutation (when ``shuffle``).
            shuffle: permute the classes before cutting; ``False`` cuts them in index order.

        Returns:
            ``{name: dataset}`` with disjoint classes.

        Raises:
            InvalidValueError: a non-positive size.
            DataError: the sizes add up to more than C.
        """
        total = 0
        for name, k in sizes.items():
            if isinstance(k, bool) or not isinstance(k, int) or k < 1:
                raise InvalidValueError(f"sizes[{name!r}]: expected a positive integer, got {k!r}")
            total += k
        if total > self.n_classes:
            raise DataError(
                f"sizes: expected at most C = {self.n_classes} classes in total, got {total} ({dict(sizes)})"
            )
        order = torch.randperm(self.n_classes, generator=generator) if shuffle else torch.arange(self.n_classes)
        out, start = {}, 0
        for name, k in sizes.items():
            out[name] = self.subset_classes(order[start : start + k])
            start += k
        return out

    # ------------------------------------------------------------ augmentation
    def with_rotations(self) -> LabelledDataset:
        """Omniglot-style augmentation: each class's 0/90/180/270-degree rotations as 4 classes.

        Class ``c`` becomes classes ``4c + r`` (rotation by ``r`` quarter turns counter-clockwise,
        ``torch.rot90`` on the last two dims), named ``"<name>/rot000"`` ... ``"/rot270"``. Apply
        it after :meth:`split_classes` so that a class's rotations stay in its split.

        Returns:
            A dataset with 4C classes and 4N examples.

        Raises:
            ShapeError: examples that are not square images ``[..., H, H]``.
        """
        shape = self.example_shape
        if len(shape) < 2 or shape[-1] != shape[-2]:
            raise ShapeError(
                f"images: rotations need square examples [N, ..., H, H], got {describe(self.images)}"
            )
        rotated = torch.stack([torch.rot90(self.images, r, dims=(-2, -1)) for r in range(4)], dim=1)
        labels = (4 * self.labels.unsqueeze(1) + torch.arange(4, device=self.labels.device)).flatten()
        names = [f"{n}/rot{90 * r:03d}" for n in self.class_names for r in range(4)]
        return LabelledDataset(rotated.flatten(0, 1), labels, names)


# ------------------------------------------------------------------------------------ Omniglot
def _read_omniglot() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Bundled Omniglot, background then evaluation: uint8 images (background 255), labels, names.

    Read through ``importlib.resources`` so it works from a wheel or zip install; nothing is
    cached (both files decompress in well under a second).
    """
    images, labels, names = [], [], []
    offset = 0
    root = resources.files("bayesmeta.tasks").joinpath("data")
    for fname in _OMNIGLOT_FILES:
        with root.joinpath(fname).open("rb") as fh, np.load(fh) as d:
            images.append(d["images"])
            labels.append(d["labels"].astype(np.int64) + offset)
            part = [str(n) for n in d["class_names"]]
        names.extend(part)
        offset += len(part)
    return np.concatenate(images), np.concatenate(labels), names


def _omniglot_class_ids(names: Sequence[str]) -> dict[str, list[int]]:
    """Global class indices of the train / val / test characters (Vinyals split)."""
    ids: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for i, name in enumerate(names):
        alphabet = name.split("/", 1)[0]
        if alphabet in _TEST_ALPHABETS or name in _TEST_EXTRA_CHARACTERS:
            ids["test"].append(i)
        elif alphabet in _VAL_ALPHABETS:
            ids["val"].append(i)
        else:
            ids["train"].append(i)
    sizes = {k: len(v) for k, v in ids.items()}
    if sizes != _SPLIT_SIZES:
        raise DataError(f"bundled Omniglot: expected split sizes {_SPLIT_SIZES}, got {sizes}")
    return ids


def _omniglot_dataset(
    images: np.ndarray, labels: np.ndarray, names: Sequence[str], class_ids: Sequence[int], rotations: bool
) -> LabelledDataset:
    """Select ``class_ids`` in uint8 (cheap), then invert and scale to ``[0, 1]`` floats."""
    new_label = np.full(len(names), -1, dtype=np.int64)
    new_label[np.asarray(class_ids)] = np.arange(len(class_ids))
    relabelled = new_label[labels]
    keep = relabelled >= 0
    # ink is 0 in the file; flip it so strokes are high and the background is 0
    x = torch.from_numpy(255 - images[keep]).to(torch.float32).div_(255.0).unsqueeze(1)
    ds = LabelledDataset(x, torch.from_numpy(relabelled[keep]), [names[i] for i in class_ids])
    return ds.with_rotations() if rotations else ds


def omniglot(split: OmniglotSplit = "train", rotations: bool = True) -> LabelledDataset:
    """Load one split of the bundled Omniglot (Vinyals split, see the module docstring).

    Args:
        split: ``"train"`` (1028 characters), ``"val"`` (172), ``"test"`` (423), ``"trainval"``
            (1200) or ``"all"`` (1623, background + evaluation).
        rotations: add the 90/180/270-degree rotations of every character as new classes (x4).

    Returns:
        A :class:`LabelledDataset` of ``[N, 1, 28, 28]`` float32 images in ``[0, 1]`` (ink high,
        background 0), 20 examples per class, class names ``"Alphabet/characterNN[/rotDDD]"``.

    Raises:
        InvalidValueError: an unknown split name.
    """
    if split not in OMNIGLOT_SPLITS:
        raise InvalidValueError(f"split: expected one of {list(OMNIGLOT_SPLITS)}, got {split!r}")
    images, labels, names = _read_omniglot()
    if split == "all":
        ids = list(range(len(names)))
    else:
        per_split = _omniglot_class_ids(names)
        parts = ("train", "val") if split == "trainval" else (split,)
        ids = sorted(i for p in parts for i in per_split[p])
    return _omniglot_dataset(images, labels, names, ids, rotations)


def omniglot_splits(rotations: bool = True) -> dict[str, LabelledDataset]:
    """All three Omniglot splits from one read of the files: ``{"train", "val", "test"}``.

    Args:
        rotations: as in :func:`omniglot`.
    """
    images, labels, names = _read_omniglot()
    ids = _omniglot_class_ids(names)
    return {k: _omniglot_dataset(images, labels, names, v, rotations) for k, v in ids.items()}
