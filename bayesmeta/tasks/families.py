"""Config task families for medical images: ``medmnist``, ``mednist``, ``npz`` and ``image_folder``.

Each family turns the options of a config's ``tasks`` section and a role (``train``, ``val`` or
``test``) into a :class:`~bayesmeta.tasks.ClinicalSampler`::

    tasks: {name: medmnist, dataset: pneumoniamnist, n_way: 2, k_shot: 5, n_query: 10,
            prevalence: natural, support_split: train}

Options (all families):

- ``n_way``, ``k_shot``, ``n_query``: as in :class:`ClinicalSampler` (``n_way`` defaults to every
  class of the dataset; with fixed identity it must equal that, or the length of ``classes``).
- ``class_identity``: ``fixed`` (default; label j is class j) or ``random``.
- ``classes``: class indices used, in label order.
- ``prevalence``: ``balanced`` (default), ``natural`` or a list of fractions, one per label.
- ``support_split``: the split the support sets come from in every role (e.g. ``train``: "the
  few labelled cases of this hospital"); default the role's own split, support and queries
  then disjoint within a task.
- ``query_split``: the split of the test role's queries (default ``test``).
- ``channels`` (``grey``/``rgb``) and ``size``: explicit conversion (see
  :func:`~bayesmeta.tasks.conform`).

``medical_pool`` (the meta-training source of leave-one-dataset-out studies) needs
``datasets``, a list of bundled names (``pneumoniamnist``, ``breastmnist``, ``retinamnist``,
``mednist``): each episode first picks one of them uniformly, then draws ``n_way`` of its classes
at random (class identity is random here by nature), so an episode never mixes datasets.
Datasets with different channels need ``channels``.

Family-specific: ``medmnist`` needs ``dataset`` (a bundled name) or ``path`` (a MedMNIST-format
npz); ``npz`` needs ``path``; ``image_folder`` needs ``path``, a folder with ``train/``,
``val/`` and ``test/`` sub-folders of class folders, or of class folders only (then every role
reads the same images: use it for evaluation, not for meta-training and testing on one folder).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from bayesmeta.exceptions import ConfigError
from bayesmeta.tasks.batch import TaskBatch
from bayesmeta.tasks.clinical import ClinicalSampler
from bayesmeta.tasks.datasets import LabelledDataset
from bayesmeta.tasks.episodes import concat_tasks
from bayesmeta.tasks.medical import (
    MEDICAL_SPLITS,
    MEDMNIST_BUNDLED,
    image_folder,
    medmnist,
    mednist,
    npz_dataset,
)

__all__ = [
    "MEDICAL_FAMILIES",
    "CLINICAL_KEYS",
    "POOL_DATASETS",
    "MixedSampler",
    "medical_family",
    "load_family_split",
    "family_probe",
]

#: Options every medical family accepts.
CLINICAL_KEYS: tuple[str, ...] = (
    "n_way", "k_shot", "n_query", "class_identity", "classes", "prevalence",
    "support_split", "query_split", "channels", "size",
)  # fmt: skip

#: Family name -> its extra keys.
MEDICAL_FAMILIES: dict[str, tuple[str, ...]] = {
    "medmnist": ("dataset", "path"),
    "mednist": (),
    "npz": ("path",),
    "image_folder": ("path",),
    "medical_pool": ("datasets",),
}

#: Names a ``medical_pool`` may list.
POOL_DATASETS: tuple[str, ...] = (*MEDMNIST_BUNDLED, "mednist")


class MixedSampler:
    """Each task from one of several samplers, picked uniformly per task from the generator.

    Args:
        samplers: task sources that give batches of one shape (same n_way, K and Q).
        names: a name per sampler, for ``repr``.
    """

    def __init__(self, samplers: Sequence[ClinicalSampler], names: Sequence[str]) -> None:
        if not samplers:
            raise ConfigError("tasks.datasets: expected at least one dataset in the pool")
        self.samplers = list(samplers)
        self.names = list(names)

    def sample(self, n_tasks: int, generator: torch.Generator | None = None) -> TaskBatch:
        """T tasks, each drawn by a uniformly chosen sampler."""
        which = torch.randint(len(self.samplers), (n_tasks,), generator=generator).tolist()
        return concat_tasks([self.samplers[i].sample(1, generator) for i in which])

    def __repr__(self) -> str:
        return f"MixedSampler(datasets={self.names}, first={self.samplers[0]!r})"


def _pool_split(name: str, split: str, conv: dict[str, Any]) -> LabelledDataset:
    if name not in POOL_DATASETS:
        raise ConfigError(f"tasks.datasets: expected names from {list(POOL_DATASETS)}, got {name!r}")
    return mednist(split, **conv) if name == "mednist" else medmnist(name, split, **conv)


def _pool(opts: dict[str, Any], role: str) -> MixedSampler:
    names = opts.get("datasets")
    if not isinstance(names, list | tuple) or not names:
        raise ConfigError("tasks.datasets: the medical_pool family needs a non-empty list of dataset names")
    for key in ("n_way", "k_shot", "n_query"):
        if key not in opts:
            raise ConfigError(f"tasks.{key}: required for the medical_pool family")
    conv = {"channels": opts.get("channels"), "size": opts.get("size")}
    parts = [_pool_split(n, role, conv) for n in names]
    shapes = {tuple(p.example_shape) for p in parts}
    if len(shapes) > 1:
        raise ConfigError(
            f"tasks.datasets: the pool's images differ in shape {sorted(shapes)}; set channels (grey/rgb) "
            f"and size to convert them to one"
        )
    samplers = [
        ClinicalSampler(
            p, k_shot=opts["k_shot"], n_query=opts["n_query"], class_identity="random", n_way=opts["n_way"],
            prevalence=opts.get("prevalence", "balanced"),
        )
        for p in parts
    ]
    return MixedSampler(samplers, list(names))


def _check_split(key: str, value: Any) -> str:
    if value not in MEDICAL_SPLITS:
        raise ConfigError(f"tasks.{key}: expected one of {list(MEDICAL_SPLITS)}, got {value!r}")
    return str(value)


def load_family_split(family: str, opts: dict[str, Any], split: str) -> LabelledDataset:
    """The dataset of one split for a medical family's options (conversion applied).

    For ``medical_pool`` it is the first dataset of the pool (what config-time checks need).
    """
    conv = {"channels": opts.get("channels"), "size": opts.get("size")}
    if family == "medical_pool":
        names = opts.get("datasets") or [None]
        return _pool_split(names[0], split, conv)
    if family == "medmnist":
        if opts.get("dataset") is None and opts.get("path") is None:
            raise ConfigError("tasks.dataset: the medmnist family needs dataset (e.g. pneumoniamnist) or path")
        return medmnist(opts.get("dataset"), split, opts.get("path"), **conv)
    if family == "mednist":
        return mednist(split, **conv)
    if opts.get("path") is None:
        raise ConfigError(f"tasks.path: the {family} family needs path (the user's data)")
    if family == "npz":
        return npz_dataset(opts["path"], split, **conv)
    if family == "image_folder":
        root = Path(opts["path"])
        if (root / split).is_dir():
            return image_folder(root / split, **conv)
        if any((root / s).is_dir() for s in MEDICAL_SPLITS):
            raise ConfigError(f"tasks.path: {str(root)!r} has split folders but no {split!r} folder")
        return image_folder(root, **conv)
    raise ConfigError(f"tasks.name: unknown medical family {family!r}")


def medical_family(family: str) -> Callable[[dict[str, Any], str], ClinicalSampler | MixedSampler]:
    """The builder ``(options, role) -> ClinicalSampler`` of a medical family."""

    def build(opts: dict[str, Any], role: str) -> ClinicalSampler | MixedSampler:
        opts = dict(opts)
        if family == "medical_pool":
            return _pool(opts, _check_split("role", role))
        for key in ("k_shot", "n_query"):
            if key not in opts:
                raise ConfigError(f"tasks.{key}: required for the {family} family")
        role = _check_split("role", role)
        s_split = _check_split("support_split", opts.get("support_split") or role)
        q_split = _check_split("query_split", opts.get("query_split") or "test") if role == "test" else role
        if family == "image_folder" and not any((Path(opts.get("path", "")) / s).is_dir() for s in MEDICAL_SPLITS):
            warnings.warn(
                f"tasks.path: {opts.get('path')!r} has no train/val/test folders, so every role reads the "
                "same images; do not meta-train and test on it",
                UserWarning,
                stacklevel=2,
            )
        support = load_family_split(family, opts, s_split)
        query = None if q_split == s_split else load_family_split(family, opts, q_split)
        prevalence = opts.get("prevalence", "balanced")
        return ClinicalSampler(
            support,
            k_shot=opts["k_shot"],
            n_query=opts["n_query"],
            query=query,
            prevalence=prevalence if isinstance(prevalence, str) else tuple(prevalence),
            class_identity=opts.get("class_identity", "fixed"),
            classes=opts.get("classes"),
            n_way=opts.get("n_way"),
        )

    return build


def family_probe(family: str, opts: dict[str, Any]) -> LabelledDataset:
    """The test split a family's options give, for checks at config time (classes, shapes)."""
    return load_family_split(family, opts, "test")
