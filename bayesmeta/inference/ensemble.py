"""Deep ensembles of meta-learners (Lakshminarayanan et al., 2017): the robust baseline.

``Ensemble`` holds M copies of any :class:`~bayesmeta.inference.MetaLearner`, each initialized
from its own seed, and predicts with the uniform mixture of the members' predictives: the members'
sample dims are concatenated, so an ensemble of M members with S samples each is a predictive of
``M * S`` equally weighted components. Epistemic uncertainty (``mutual_information``,
``epistemic_variance``) then includes the members' disagreement.

Training. ``meta_loss`` is the *sum* of the members' meta-losses on the same meta-batch. The
members share no parameter, so the gradient of the sum with respect to a member's parameters is
that member's own meta-gradient, and Adam updates each parameter from its own gradient history:
one MetaTrainer run is M independent meta-training runs on the same stream of training tasks.
Gradient clipping is applied per member (:meth:`grad_clip_groups`), so the norm of one member's
gradient never rescales another's. Members differ by initialization (``seed + k``) and, for
sampling learners, by their own noise; they see the same tasks, which is the part of deep
ensembles' diversity that matters least (Fort et al., 2019: initialization dominates).

Cost. Training and prediction cost M times the base learner (:attr:`training_cost`), memory
and checkpoints M times its parameters. ``docs/calibration.md`` compares an ensemble with a single
learner at equal and at M-fold compute.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from bayesmeta._validation import check_positive_int
from bayesmeta.exceptions import ConfigError, ShapeError
from bayesmeta.inference.base import MetaLearner, StepOutput, TaskPosterior
from bayesmeta.predictive import CategoricalPredictive, GaussianPredictive, Predictive
from bayesmeta.tasks.batch import SupportSet, TaskBatch

__all__ = ["Ensemble", "EnsemblePosterior", "mixture"]


class EnsemblePosterior(TaskPosterior):
    """The members' posteriors, in member order.

    Attributes:
        members: one :class:`TaskPosterior` per ensemble member.
    """

    def __init__(self, members: Sequence[TaskPosterior]) -> None:
        self.members = tuple(members)

    @property
    def n_tasks(self) -> int:
        return self.members[0].n_tasks


class Ensemble(MetaLearner):
    """A uniform mixture of M independently initialized meta-learners.

    Args:
        members: the member learners (same class, same task kind), or a factory called M times.
        n_members: M, required with a factory.
        seed: with a factory, member k is built under ``torch.manual_seed(seed + k)`` (the global
            RNG state is restored afterwards), so one seed reproduces the whole ensemble.

    Example:
        >>> ens = Ensemble(lambda: MAML(MLP(1, 1), task_kind="regression"), n_members=5, seed=0)
        >>> pred = ens(batch)  # GaussianPredictive with 5 components
    """

    config_keys: ClassVar[tuple[str, ...]] = ("base", "members", "seed")

    def __init__(
        self,
        members: Sequence[MetaLearner] | Callable[[], MetaLearner],
        n_members: int | None = None,
        seed: int = 0,
    ) -> None:
        if callable(members) and not isinstance(members, nn.Module | Sequence):
            check_positive_int("n_members", n_members)  # type: ignore[arg-type]
            built = []
            for k in range(int(n_members)):  # type: ignore[arg-type]
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed + k)
                    built.append(members())
            members = built
        elif n_members is not None and n_members != len(members):  # type: ignore[arg-type]
            raise ConfigError(f"n_members: expected {len(members)} to match the given members, got {n_members}")  # type: ignore[arg-type]
        members = list(members)  # type: ignore[arg-type]
        if not members:
            raise ConfigError("members: expected at least one member learner, got none")
        for i, m in enumerate(members):
            if not isinstance(m, MetaLearner):
                raise ConfigError(f"members[{i}]: expected a MetaLearner, got {type(m).__name__}")
        kinds = {m.task_kind for m in members}
        classes = {type(m) for m in members}
        if len(kinds) != 1 or len(classes) != 1:
            raise ConfigError(
                f"members: expected copies of one learner, got classes {sorted(c.__name__ for c in classes)} "
                f"and task kinds {sorted(map(str, kinds))}"
            )
        super().__init__(members[0].task_kind)
        self.members = nn.ModuleList(members)
        self.seed = int(seed)

    @property
    def n_members(self) -> int:
        """M."""
        return len(self.members)

    @property
    def training_cost(self) -> dict[str, Any]:
        """What the ensemble costs relative to one member: M times the compute and parameters."""
        per = sum(p.numel() for p in self.members[0].parameters())
        return {
            "members": self.n_members,
            "base": type(self.members[0]).__name__,
            "parameters_per_member": per,
            "parameters": per * self.n_members,
            "relative_cost": float(self.n_members),
        }

    def grad_clip_groups(self) -> Iterator[list[nn.Parameter]]:
        """Parameter groups clipped separately by the trainer: one per member."""
        for m in self.members:
            yield list(m.parameters())

    # ------------------------------------------------------------------ interface
    def meta_loss(self, batch: TaskBatch) -> StepOutput:
        """Sum of the members' meta-losses (each member's gradient is its own; module docstring)."""
        self.check_batch(batch)
        outs = [m.meta_loss(batch) for m in self.members]
        loss = torch.stack([o.loss for o in outs]).sum()
        keys = set.intersection(*(set(o.metrics) for o in outs))
        metrics = {k: sum(o.metrics[k] for o in outs) / len(outs) for k in sorted(keys)}
        metrics["member_loss_spread"] = float(torch.stack([o.loss.detach() for o in outs]).std()) if len(outs) > 1 else 0.0
        return StepOutput(loss, metrics)

    def adapt(self, support: SupportSet) -> EnsemblePosterior:
        """Every member's posterior for the support sets."""
        self.check_batch(support, "support")
        return EnsemblePosterior([m.adapt(support) for m in self.members])

    def predict(self, posterior: TaskPosterior, query_x: torch.Tensor) -> Predictive:
        """The uniform mixture of the members' predictives (sample dims concatenated)."""
        if not isinstance(posterior, EnsemblePosterior) or len(posterior.members) != self.n_members:
            raise ShapeError(
                f"posterior: expected an EnsemblePosterior of {self.n_members} members (from this ensemble's adapt), "
                f"got {type(posterior).__name__}"
            )
        self.check_query_x(posterior, query_x)
        preds = [m.predict(p, query_x) for m, p in zip(self.members, posterior.members, strict=True)]
        return mixture(preds)

    def extra_repr(self) -> str:
        return f"n_members={self.n_members}, seed={self.seed}"


def mixture(preds: Sequence[Predictive]) -> Predictive:
    """The uniform mixture of predictives with equal sample counts: sample dims concatenated.

    Raises:
        ShapeError: predictives of different kinds or different sample counts (the concatenation
            would weight members unequally).
    """
    if len({p.n_samples for p in preds}) != 1:
        raise ShapeError(f"members: expected one sample count M for every member, got {[p.n_samples for p in preds]}")
    if all(isinstance(p, CategoricalPredictive) for p in preds):
        return CategoricalPredictive(logits=torch.cat([p.sample_log_probs for p in preds], 0))  # type: ignore[attr-defined]
    if all(isinstance(p, GaussianPredictive) for p in preds):
        return GaussianPredictive(
            torch.cat([p.sample_mean for p in preds], 0),  # type: ignore[attr-defined]
            torch.cat([p.sample_variance for p in preds], 0),  # type: ignore[attr-defined]
        )
    raise ShapeError(f"members: expected predictives of one kind, got {[type(p).__name__ for p in preds]}")
