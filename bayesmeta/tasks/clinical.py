"""``ClinicalSampler``: few-shot episodes designed like a clinical deployment.

Three things differ from the benchmark episodes of :class:`~bayesmeta.tasks.FewShotSampler`:

- **Fixed class identity** (``class_identity="fixed"``): task label j is always the dataset's
  class ``classes[j]`` (by default every class, in order), so "label 1" means "pneumonia" in
  every episode and sensitivity, specificity and class-specific costs mean something.
  ``"random"`` draws ``n_way`` classes and a random class-to-label map per task (benchmark style).
- **Support and queries from different splits**: ``support`` holds the few labelled cases
  ("the labelled cases from this hospital"), ``query`` the cases to be scored (e.g. the official
  test split). Without ``query`` both come from one pool, disjoint within a task.
- **Query prevalence**: ``"balanced"`` (``n_query`` per class), ``"natural"`` (the class
  frequencies of the query split) or a sequence of fractions, one per label; for the last two
  the episode has ``n_way * n_query`` queries split by the largest-remainder rule, so every
  episode has the same counts and its prevalence is the designed one up to rounding.

A class that cannot supply what an episode asks is refused when the sampler is built, with the
class name, the split, how many examples it has and how many were asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from bayesmeta._validation import check_positive_int
from bayesmeta.exceptions import DataError, InvalidValueError
from bayesmeta.tasks.batch import TaskBatch
from bayesmeta.tasks.datasets import LabelledDataset

__all__ = ["ClinicalSampler", "PREVALENCE_MODES", "prevalence_counts"]

#: Named query prevalences (besides a sequence of fractions).
PREVALENCE_MODES: tuple[str, ...] = ("balanced", "natural")

Prevalence = Literal["balanced", "natural"] | Sequence[float]


def prevalence_counts(fractions: Sequence[float] | torch.Tensor, total: int) -> list[int]:
    """Split ``total`` into integer counts proportional to ``fractions`` (largest remainder).

    Args:
        fractions: non-negative weights, one per class (normalized here).
        total: the number of queries to split.

    Returns:
        Counts summing to ``total``; ties in the remainders go to the lower class index.
    """
    f = torch.as_tensor(fractions, dtype=torch.float64).flatten()
    if f.numel() == 0 or not bool(torch.isfinite(f).all()) or bool((f < 0).any()) or float(f.sum()) <= 0:
        raise InvalidValueError(f"prevalence: expected non-negative finite fractions with a positive sum, got {f.tolist()}")
    share = f / f.sum() * total
    counts = share.floor().long()
    left = total - int(counts.sum())
    if left:
        rem = share - counts.double()
        order = sorted(range(f.numel()), key=lambda i: (-float(rem[i]), i))
        for i in order[:left]:
            counts[i] += 1
    return [int(c) for c in counts]


def _where(ds: LabelledDataset, default: str) -> str:
    return repr(ds.source) if ds.source else default


class ClinicalSampler:
    """Episodes with fixed class identity, separate support/query splits and a chosen prevalence.

    Args:
        support: the dataset the K support examples per class come from.
        k_shot: support examples per class K.
        n_query: query examples per class (balanced), or ``n_way * n_query`` in total otherwise.
        query: the dataset the queries come from (another split of the same classes); None draws
            them from ``support``, disjoint from the task's support examples.
        prevalence: ``"balanced"``, ``"natural"`` or one fraction per label (normalized).
        class_identity: ``"fixed"`` (label j is always ``classes[j]``) or ``"random"``.
        classes: the class indices used, in label order (default every class of ``support``).
        n_way: classes per episode; with fixed identity it must equal ``len(classes)`` (default),
            with random identity it may be smaller.

    Raises:
        InvalidValueError: a bad option value.
        DataError: support and query splits with different classes, too few classes, a
            prevalence that leaves a label without queries, or a class with too few examples
            (message: class, split, how many it has and how many were asked).
    """

    def __init__(
        self,
        support: LabelledDataset,
        k_shot: int,
        n_query: int,
        query: LabelledDataset | None = None,
        prevalence: Prevalence = "balanced",
        class_identity: Literal["fixed", "random"] = "fixed",
        classes: Sequence[int] | None = None,
        n_way: int | None = None,
    ) -> None:
        for name, ds in (("support", support), ("query", query)):
            if ds is not None and not isinstance(ds, LabelledDataset):
                raise DataError(f"{name}: expected a LabelledDataset, got {type(ds).__name__}")
        self.support = support
        self.query = query
        self.k_shot = check_positive_int("k_shot", k_shot)
        self.n_query = check_positive_int("n_query", n_query)
        if class_identity not in ("fixed", "random"):
            raise InvalidValueError(f"class_identity: expected 'fixed' or 'random', got {class_identity!r}")
        self.class_identity = class_identity
        if query is not None:
            if query.class_names != support.class_names:
                raise DataError(
                    f"query: expected the classes of the support split {list(support.class_names)}, "
                    f"got {list(query.class_names)} (from {_where(query, 'the query dataset')})"
                )
            if query.example_shape != support.example_shape:
                raise DataError(
                    f"query: expected examples of shape {list(support.example_shape)} like the support "
                    f"split, got {list(query.example_shape)}"
                )
        c_all = support.n_classes
        if classes is None:
            ids = list(range(c_all))
        else:
            ids = [int(c) for c in classes]
            if not ids or len(set(ids)) != len(ids) or min(ids) < 0 or max(ids) >= c_all:
                raise InvalidValueError(f"classes: expected distinct class indices in [0, {c_all}), got {list(classes)}")
        self.classes = torch.tensor(ids, dtype=torch.int64)
        if n_way is None:
            n_way = len(ids)
        self.n_way = check_positive_int("n_way", n_way)
        if class_identity == "fixed" and self.n_way != len(ids):
            raise InvalidValueError(
                f"n_way: with fixed class identity every episode uses all {len(ids)} classes "
                f"{[support.class_names[i] for i in ids]}, got n_way = {self.n_way}; pick the classes "
                f"with classes=[...] or use class_identity='random'"
            )
        if self.n_way > len(ids):
            raise DataError(f"n_way: expected at most the {len(ids)} classes available, got {self.n_way}")
        if self.n_way < 2:
            raise InvalidValueError(f"n_way: expected at least 2 classes per episode, got {self.n_way}")
        self.prevalence = self._check_prevalence(prevalence)
        self._pool_s = self._pools(support)
        self._pool_q = self._pools(query) if query is not None else self._pool_s
        self._check_sizes()

    # ------------------------------------------------------------ set-up
    def _check_prevalence(self, prevalence: Prevalence) -> Prevalence:
        if isinstance(prevalence, str):
            if prevalence not in PREVALENCE_MODES:
                raise InvalidValueError(
                    f"prevalence: expected 'balanced', 'natural' or one fraction per label, got {prevalence!r}"
                )
            return prevalence
        fr = [float(v) for v in prevalence]
        if self.class_identity != "fixed":
            raise InvalidValueError("prevalence: given fractions need class_identity='fixed' (a fraction per label)")
        if len(fr) != self.n_way:
            raise InvalidValueError(f"prevalence: expected {self.n_way} fractions (one per label), got {len(fr)}")
        prevalence_counts(fr, self.n_way * self.n_query)  # validates
        return tuple(fr)

    @staticmethod
    def _pools(ds: LabelledDataset) -> list[torch.Tensor]:
        labels = ds.labels.cpu()
        return [torch.nonzero(labels == c).flatten() for c in range(ds.n_classes)]

    def query_counts(self, classes: Sequence[int] | None = None) -> list[int]:
        """Queries per label for an episode over ``classes`` (default: the fixed classes)."""
        ids = self.classes.tolist() if classes is None else list(classes)
        total = self.n_way * self.n_query
        if self.prevalence == "balanced":
            return [self.n_query] * len(ids)
        if self.prevalence == "natural":
            src = self.query if self.query is not None else self.support
            fr = [float(src.class_counts[c]) for c in ids]
        else:
            fr = list(self.prevalence)  # type: ignore[arg-type]
        counts = prevalence_counts(fr, total)
        if min(counts) == 0:
            zero = [self.support.class_names[ids[j]] for j, n in enumerate(counts) if n == 0]
            raise DataError(
                f"prevalence: {total} queries per episode give none of class(es) {zero}; "
                f"raise n_query or the class's fraction"
            )
        return counts

    def _check_sizes(self) -> None:
        ids = self.classes.tolist()
        if self.class_identity == "fixed":
            asked = dict(zip(ids, self.query_counts()))
        elif self.prevalence == "balanced":
            asked = {c: self.n_query for c in ids}
        else:
            # random classes with natural prevalence: counts depend on the classes drawn, so the
            # check runs per episode in sample(); here only the support side
            asked = {c: 0 for c in ids}
        for c in ids:
            self._check_class(c, asked[c])

    def _check_class(self, c: int, q: int) -> None:
        """Refuse class ``c`` if it cannot give K support and ``q`` query examples."""
        name = self.support.class_names[c]
        have_s = int(self._pool_s[c].numel())
        if self.query is None:
            need = self.k_shot + q
            if need > have_s:
                raise DataError(
                    f"class {name!r} (label {c}) of split {_where(self.support, 'support')} has {have_s} "
                    f"examples, asked for {self.k_shot} support + {q} query = {need}"
                )
            return
        if self.k_shot > have_s:
            raise DataError(
                f"class {name!r} (label {c}) of support split {_where(self.support, 'support')} has "
                f"{have_s} examples, asked for k_shot = {self.k_shot}"
            )
        have_q = int(self._pool_q[c].numel())
        if q > have_q:
            raise DataError(
                f"class {name!r} (label {c}) of query split {_where(self.query, 'query')} has "
                f"{have_q} examples, asked for {q} queries"
            )

    # ------------------------------------------------------------ sampling
    def _draw(self, pool: torch.Tensor, n: int, generator: torch.Generator | None) -> torch.Tensor:
        return pool[torch.randperm(pool.numel(), generator=generator)[:n]]

    def sample(self, n_tasks: int, generator: torch.Generator | None = None) -> TaskBatch:
        """Sample T episodes (class-major: the K support points of label 0 first, and so on).

        Args:
            n_tasks: T.
            generator: a CPU generator; ``None`` uses torch's default generator.

        Returns:
            A classification :class:`TaskBatch` with ``support_y [T, n_way * k_shot]`` and
            ``query_y [T, Q]``, Q the sum of the per-label query counts.
        """
        t = check_positive_int("n_tasks", n_tasks)
        sx, sy, qx, qy = [], [], [], []
        q_src = self.query if self.query is not None else self.support
        for _ in range(t):
            if self.class_identity == "fixed":
                ids = self.classes.tolist()
            else:
                pick = torch.randperm(self.classes.numel(), generator=generator)[: self.n_way]
                ids = self.classes[pick].tolist()
            counts = self.query_counts(ids)
            if self.class_identity == "random" and self.prevalence != "balanced":
                for c, q in zip(ids, counts):
                    self._check_class(c, q)
            s_idx, q_idx = [], []
            for c, q in zip(ids, counts):
                if self.query is None:
                    both = self._draw(self._pool_s[c], self.k_shot + q, generator)
                    s_idx.append(both[: self.k_shot])
                    q_idx.append(both[self.k_shot :])
                else:
                    s_idx.append(self._draw(self._pool_s[c], self.k_shot, generator))
                    q_idx.append(self._draw(self._pool_q[c], q, generator))
            s_cat, q_cat = torch.cat(s_idx), torch.cat(q_idx)
            sx.append(self.support.images[s_cat.to(self.support.images.device)])
            qx.append(q_src.images[q_cat.to(q_src.images.device)])
            lab = torch.arange(self.n_way)
            sy.append(lab.repeat_interleave(self.k_shot))
            qy.append(lab.repeat_interleave(torch.tensor(counts)))
        device = self.support.images.device
        return TaskBatch(
            torch.stack(sx), torch.stack(sy).to(device), torch.stack(qx).to(device), torch.stack(qy).to(device),
            n_way=self.n_way,
        )

    def __repr__(self) -> str:
        names = [self.support.class_names[c] for c in self.classes.tolist()]
        return (
            f"ClinicalSampler(classes={names}, n_way={self.n_way}, k_shot={self.k_shot}, n_query={self.n_query}, "
            f"prevalence={self.prevalence!r}, class_identity={self.class_identity!r}, "
            f"support={self.support.source!r}, query={None if self.query is None else self.query.source!r})"
        )
