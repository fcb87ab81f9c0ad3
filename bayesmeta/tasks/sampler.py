"""``FewShotSampler``: N-way K-shot classification episodes from a :class:`LabelledDataset`.

Sampling is vectorized over tasks: a per-class index table ``[C, max_count]`` is built once, then
the top ``n_way`` of uniform keys pick distinct classes per task and an ``argsort`` picks
``k_shot + n_query`` distinct examples per chosen class, so a batch of 32 episodes of 20-way
1-shot Omniglot costs a few milliseconds. Random keys are drawn on the CPU from the caller's
generator (so a seed means the same episodes on every device); only indices move to the
dataset's device for the gather.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from bayesmeta._validation import check_positive_int
from bayesmeta.exceptions import DataError, InvalidValueError, ShapeError
from bayesmeta.tasks.batch import TaskBatch
from bayesmeta.tasks.datasets import LabelledDataset

__all__ = ["EpisodeIndices", "FewShotSampler"]

_N_ROTATIONS = 4


@dataclass(frozen=True)
class EpisodeIndices:
    """Which classes and examples make up T episodes (what :meth:`FewShotSampler.sample` gathers).

    Attributes:
        classes: ``[T, n_way]`` class ids; task label j is class ``classes[t, j]``. With
            ``augment_rotations`` these are virtual ids ``4c + r`` (class c, r quarter turns).
        support: ``[T, n_way, k_shot]`` indices into the dataset's examples.
        query: ``[T, n_way, n_query]`` indices into the dataset's examples.
    """

    classes: torch.Tensor
    support: torch.Tensor
    query: torch.Tensor


class FewShotSampler:
    """Draws N-way K-shot episodes with random class-to-label assignment per task.

    Episodes are laid out class-major: support point ``j * k_shot + i`` is the i-th shot of
    label j (labels ``[0, 0, ..., 1, 1, ...]``), and likewise for queries; which class gets
    which label is random per task.

    Args:
        dataset: the examples to draw from (one split, e.g. ``omniglot("train")``).
        n_way: classes per episode C.
        k_shot: support examples per class K.
        n_query: query examples per class Q (distinct from the support examples).
        augment_rotations: treat the 0/90/180/270-degree rotations of every class as 4 distinct
            classes, rotating on the fly instead of materializing 4x the images. Sampling from a
            dataset ``d`` with this flag gives the same episodes, seed for seed, as sampling from
            ``d.with_rotations()`` without it.
        class_identity: clinical episode design: fixed class identity (see ``classes``).
        prevalence: clinical episode design: a given or natural query prevalence.
        query: clinical episode design: queries from another split.
        classes: clinical episode design. Any of ``class_identity``, ``prevalence``, ``query``
            and ``classes`` set to a non-default value makes this sampler draw its episodes through
            :class:`~bayesmeta.tasks.ClinicalSampler` (see there), where ``n_query`` is per class
            when balanced and ``n_way * n_query`` in total otherwise.

    Raises:
        InvalidValueError: a non-positive size.
        DataError: ``n_way`` exceeds the classes available, or ``k_shot + n_query`` exceeds the
            examples of some class.
        ShapeError: ``augment_rotations`` on examples that are not square images.
    """

    def __init__(
        self,
        dataset: LabelledDataset,
        n_way: int,
        k_shot: int,
        n_query: int,
        augment_rotations: bool = False,
        *,
        class_identity: str = "random",
        prevalence: str | Sequence[float] = "balanced",
        query: LabelledDataset | None = None,
        classes: Sequence[int] | None = None,
    ) -> None:
        if not isinstance(dataset, LabelledDataset):
            raise DataError(f"dataset: expected a LabelledDataset, got {type(dataset).__name__}")
        self._clinical = None
        if class_identity != "random" or prevalence != "balanced" or query is not None or classes is not None:
            from bayesmeta.tasks.clinical import ClinicalSampler

            if augment_rotations:
                raise InvalidValueError("augment_rotations: not available with clinical episode options")
            self._clinical = ClinicalSampler(
                dataset, k_shot, n_query, query=query, prevalence=prevalence,  # type: ignore[arg-type]
                class_identity=class_identity, classes=classes, n_way=n_way,  # type: ignore[arg-type]
            )  # fmt: skip
            self.dataset, self.n_way, self.k_shot, self.n_query = dataset, n_way, k_shot, n_query
            self.augment_rotations = False
            self.n_classes = dataset.n_classes
            return
        self.dataset = dataset
        self.n_way = check_positive_int("n_way", n_way)
        self.k_shot = check_positive_int("k_shot", k_shot)
        self.n_query = check_positive_int("n_query", n_query)
        self.augment_rotations = bool(augment_rotations)
        shape = dataset.example_shape
        if self.augment_rotations and (len(shape) < 2 or shape[-1] != shape[-2]):
            raise ShapeError(
                f"augment_rotations: needs square examples [..., H, H], got example shape {list(shape)}"
            )
        n_rot = _N_ROTATIONS if self.augment_rotations else 1
        self.n_classes = dataset.n_classes * n_rot
        if self.n_way > self.n_classes:
            extra = f" ({dataset.n_classes} x {n_rot} rotations)" if n_rot > 1 else ""
            raise DataError(
                f"n_way: expected at most the {self.n_classes} classes of the dataset{extra}, got n_way = {self.n_way}"
            )
        counts = dataset.class_counts
        need = self.k_shot + self.n_query
        smallest = int(counts.argmin())
        if need > int(counts[smallest]):
            raise DataError(
                f"k_shot + n_query: expected at most {int(counts[smallest])}, the examples of the "
                f"smallest class ({smallest}, {dataset.class_names[smallest]!r}), got "
                f"{self.k_shot} + {self.n_query} = {need}"
            )
        # table[c, i] = index of the i-th example of class c; padded with 0 where i >= counts[c]
        labels = dataset.labels.cpu()
        order = torch.argsort(labels, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        sorted_labels = labels[order]
        pos = torch.arange(labels.numel()) - starts[sorted_labels]
        self._table = torch.zeros(dataset.n_classes, int(counts.max()), dtype=torch.int64)
        self._table[sorted_labels, pos] = order
        self._counts = counts
        self._ragged = bool((counts != counts.max()).any())

    def sample_indices(self, n_tasks: int, generator: torch.Generator | None = None) -> EpisodeIndices:
        """Draw the classes and example indices of T episodes (no images are gathered; not
        available with clinical episode options).

        Args:
            n_tasks: T.
            generator: a CPU generator; ``None`` uses torch's default generator.
        """
        t = check_positive_int("n_tasks", n_tasks)
        if self._clinical is not None:
            raise InvalidValueError("sample_indices: not available with clinical episode options; use sample()")
        w, k = self.n_way, self.k_shot
        # the n_way largest of C uniform keys: distinct classes in a uniformly random order, which
        # is itself the random class-to-label assignment (topk: cheaper than a full argsort)
        classes = torch.rand(t, self.n_classes, generator=generator).topk(w, dim=1).indices  # [T, W]
        base = classes // _N_ROTATIONS if self.augment_rotations else classes
        keys = torch.rand(t, w, self._table.shape[1], generator=generator)  # [T, W, max_count]
        if self._ragged:
            # padding slots sort last, so only real examples are picked (k + q <= every count)
            absent = torch.arange(self._table.shape[1]) >= self._counts[base].unsqueeze(-1)
            keys = keys.masked_fill(absent, 2.0)
        pos = keys.argsort(dim=-1)[..., : k + self.n_query]  # [T, W, K + Q]
        idx = self._table[base.unsqueeze(-1), pos]
        return EpisodeIndices(classes=classes, support=idx[..., :k], query=idx[..., k:])

    def _gather(self, idx: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Examples ``[T, W, n, *shape]`` at ``idx`` ``[T, W, n]``, rotated when augmenting."""
        images = self.dataset.images
        x = images[idx.to(images.device)]
        if self.augment_rotations:
            rot = (classes % _N_ROTATIONS).to(images.device)  # [T, W]
            for r in range(1, _N_ROTATIONS):
                sel = rot == r
                if bool(sel.any()):
                    x[sel] = torch.rot90(x[sel], r, dims=(-2, -1))
        return x

    def sample(self, n_tasks: int, generator: torch.Generator | None = None) -> TaskBatch:
        """Sample T episodes.

        Args:
            n_tasks: T.
            generator: a CPU generator; ``None`` uses torch's default generator.

        Returns:
            A classification :class:`TaskBatch`: ``support_x [T, n_way * k_shot, *shape]``,
            ``support_y [T, n_way * k_shot]`` int64 in ``[0, n_way)``, ``query_x
            [T, n_way * n_query, *shape]``, ``query_y``, ``n_way`` set, on the dataset's device.
        """
        if self._clinical is not None:
            return self._clinical.sample(n_tasks, generator)
        ep = self.sample_indices(n_tasks, generator)
        t, w = ep.classes.shape
        shape = self.dataset.example_shape
        sx = self._gather(ep.support, ep.classes).reshape(t, w * self.k_shot, *shape)
        qx = self._gather(ep.query, ep.classes).reshape(t, w * self.n_query, *shape)
        device = self.dataset.images.device
        label = torch.arange(w, device=device)
        sy = label.repeat_interleave(self.k_shot).expand(t, -1).contiguous()
        qy = label.repeat_interleave(self.n_query).expand(t, -1).contiguous()
        return TaskBatch(sx, sy, qx, qy, n_way=w)

    def __repr__(self) -> str:
        if self._clinical is not None:
            return f"FewShotSampler(clinical={self._clinical!r})"
        return (
            f"FewShotSampler(n_way={self.n_way}, k_shot={self.k_shot}, n_query={self.n_query}, "
            f"augment_rotations={self.augment_rotations}, dataset={self.dataset!r})"
        )
