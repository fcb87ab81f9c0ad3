"""The fixed benchmark suites: task settings, test episodes, and every learner's configuration.

A :class:`Suite` is everything that must be equal for the methods of one table to be compared:
the meta-training task family, the test episodes (family, count, seed), the validation episodes
and the per-method CPU budget. Each method is a :class:`MethodEntry`: a ``method``/``model``
section of an ordinary run config (:mod:`bayesmeta.config`), so a benchmark run directory is an
ordinary run directory that ``bayesmeta evaluate`` and ``bayesmeta report`` also read.

Two method labels are not learners of :data:`bayesmeta.config.METHODS`:

- ``protonet+ts``: the trained ``protonet`` of the same suite, temperature-scaled
  (:class:`~bayesmeta.calibration.TemperatureScaling`) on the suite's calibration episodes
  (validation tasks drawn like the test tasks, never the test tasks). It has no training of its
  own; its budget and steps are ProtoNets'.
- ``ensemble``: a deep ensemble (:class:`~bayesmeta.inference.Ensemble`) of 3 members of the
  suite's plain point-estimate learner (ProtoNets for classification, MAML for regression),
  trained under the same CPU budget as every other method (so each member gets a third).

Hyperparameters follow the example configs (``examples/configs/``) and the papers where they
exist; they are not tuned per suite. ``smoke`` shrinks a suite to seconds for tests and CI
(tiny models, a few episodes and steps): its numbers mean nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from bayesmeta.exceptions import ConfigError

__all__ = [
    "MethodEntry",
    "Suite",
    "SUITES",
    "DERIVED_METHODS",
    "get_suite",
    "select_methods",
    "smoke_suite",
]

#: Method labels computed from another method's trained run instead of trained themselves.
DERIVED_METHODS: Mapping[str, str] = {"protonet+ts": "protonet"}


@dataclass(frozen=True)
class MethodEntry:
    """One method of a suite.

    Attributes:
        label: the name in tables and records (``maml``, ``protonet+ts``, ``bmaml_prior``...).
        method: the config's ``method`` section.
        model: the config's ``model`` section (``{}`` for learners without a backbone).
        training: overrides of the suite's ``training`` options for this method.
        tasks: overrides of the suite's meta-*training* task options for this method (ProtoNets
            trained with more ways than tested, as in their paper); validation episodes follow
            them, the test and calibration episodes stay the suite's.
        derived_from: for a derived method (``protonet+ts``), the label it is computed from.
        calibrator: the post-hoc calibrator of a derived method (``"temperature"``).
    """

    label: str
    method: dict[str, Any]
    model: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    tasks: dict[str, Any] = field(default_factory=dict)
    derived_from: str | None = None
    calibrator: str | None = None


@dataclass(frozen=True)
class Suite:
    """A fixed benchmark: one task setting, one set of test episodes, every method.

    Attributes:
        name: the suite's name (``sinusoid_5shot``, ``omniglot_5w1s``...).
        description: one line for reports and docs.
        kind: ``"classification"`` or ``"regression"``.
        tasks: the meta-training ``tasks`` section.
        test_tasks: the test task family and options (a full ``tasks`` section with ``name``);
            ``None``: ``tasks`` with ``test_overrides``, drawn from the family's test split.
        test_overrides: task options that differ at test time (more query points, 20-way...).
        n_episodes: test tasks (all methods see the same ones).
        seed: seed of the test episodes; validation and calibration episodes derive from it.
        val_episodes: validation tasks during training (best checkpoint) and calibration tasks
            of ``protonet+ts``.
        tasks_per_batch: tasks per evaluation batch (compute only; never changes which tasks).
        budget_s: default CPU seconds of meta-training per method.
        max_steps: meta-steps cap per method (the budget usually stops training first).
        training: shared ``training`` options (meta-batch size, learning rate, intervals...).
        methods: the methods, in table order.
        reference: ``"linear_gaussian"``: also score every predictive against the exact
            posterior predictive of the family (KL and W2 per query point).
        train_suite: reuse the trained methods of this suite (same training config); only the
            test episodes differ (the DKT protocol's in-range and out-of-range tests).
        smoke: option overrides that shrink the suite to seconds (see :func:`smoke_suite`).
    """

    name: str
    description: str
    kind: str
    tasks: dict[str, Any]
    methods: tuple[MethodEntry, ...]
    test_tasks: dict[str, Any] | None = None
    test_overrides: dict[str, Any] = field(default_factory=dict)
    n_episodes: int = 600
    seed: int = 1234
    val_episodes: int = 100
    tasks_per_batch: int = 20
    budget_s: float = 120.0
    max_steps: int = 100_000
    training: dict[str, Any] = field(default_factory=dict)
    reference: str | None = None
    train_suite: str | None = None
    smoke: dict[str, Any] = field(default_factory=dict)

    @property
    def method_labels(self) -> tuple[str, ...]:
        """The method labels in table order."""
        return tuple(m.label for m in self.methods)

    def method(self, label: str) -> MethodEntry:
        """The entry of one method label.

        Raises:
            ConfigError: a label the suite does not have (the message lists its labels).
        """
        for m in self.methods:
            if m.label == label:
                return m
        raise ConfigError(
            f"method: unknown method {label!r} for suite {self.name!r}; valid methods are: {', '.join(self.method_labels)}"
        )


# ------------------------------------------------------------------------------ method sets
_MLP = {"name": "mlp", "hidden": [40, 40]}


def _regression_methods(inner_lr: float, inner_steps: int, mlp: dict[str, Any], *, dkt_kernel: str = "spectral",
                        prior_std: float = 0.05, prior_weight: float = 1.0) -> tuple[MethodEntry, ...]:  # fmt: skip
    """Every regression learner, with MAML's inner loop where one applies.

    ``prior_weight``: BMAML's learned-prior term in the SVGD target. With a truncated inner loop
    (one step of 0.01) it is 0: the prior gives the initial particles only, because the
    truncation already acts as the prior and an explicit term on top pulls the particles back
    to its mean (docs/bayesian_maml.md, "The learned prior on sinusoids").
    """
    inner = {"inner_lr": inner_lr, "inner_steps": inner_steps}
    weight = {} if prior_weight == 1.0 else {"prior_weight": prior_weight}
    return (
        MethodEntry("maml", {"name": "maml", **inner}, dict(mlp)),
        MethodEntry("fomaml", {"name": "fomaml", **inner}, dict(mlp)),
        MethodEntry("metasgd", {"name": "metasgd", **inner}, dict(mlp)),
        MethodEntry("anil", {"name": "anil", **inner}, dict(mlp)),
        MethodEntry("reptile", {"name": "reptile", "inner_lr": 0.02, "inner_steps": 5}, dict(mlp)),
        MethodEntry(
            "imaml",
            {"name": "imaml", "inner_lr": 0.02, "inner_steps": 10, "reg": 1.0, "cg_steps": 5},
            dict(mlp),
        ),
        MethodEntry(
            "bmaml",
            {"name": "bmaml", "n_particles": 5, **inner, "leader_steps": inner_steps},
            dict(mlp),
        ),
        MethodEntry(
            "bmaml_prior",
            {
                "name": "bmaml",
                "n_particles": 5,
                **inner,
                "leader_steps": inner_steps,
                "prior": "learned",
                "prior_init_std": prior_std,
                **weight,
            },
            dict(mlp),
        ),
        MethodEntry(
            "platipus", {"name": "platipus", **inner, "n_samples": 5, "kl_weight": 0.001}, dict(mlp)
        ),
        MethodEntry("dkt", {"name": "dkt", "kernel": dkt_kernel, "n_mixtures": 4}, dict(mlp)),
        MethodEntry(
            "alpaca", {"name": "alpaca", "prior_precision": 1.0, "noise_init": 1.0}, dict(mlp)
        ),
        MethodEntry("versa", {"name": "versa", "n_samples": 32, "hidden": 128}, dict(mlp)),
        MethodEntry("cnp", {"name": "cnp", "hidden": 128, "r_dim": 128}),
        MethodEntry(
            "np", {"name": "np", "hidden": 128, "r_dim": 128, "z_dim": 128, "n_samples": 32}
        ),
        MethodEntry(
            "anp",
            {
                "name": "anp",
                "hidden": 128,
                "r_dim": 128,
                "z_dim": 128,
                "n_heads": 8,
                "n_samples": 32,
            },
        ),
        MethodEntry(
            "ensemble",
            {"name": "ensemble", "members": 3, "base": {"name": "maml", **inner}},
            dict(mlp),
        ),
    )


def _classification_methods(
    n_way: int, conv: dict[str, Any], protonet_tasks: dict[str, Any] | None = None
) -> tuple[MethodEntry, ...]:
    """Every classification learner on a Conv4 backbone (MAML's Omniglot settings).

    ``protonet_tasks``: ProtoNets' (and their ensemble's) own meta-training task options. Their
    paper trains with more ways than it tests (60-way for 5-way tests), one episode per step,
    and halves Adam's rate every 2000 episodes; given these options they get that recipe.
    """
    inner = {"inner_lr": 0.4, "inner_steps": 1, "test_inner_steps": 3}
    proto_tasks = dict(protonet_tasks or {})
    proto_training = dict(_PROTONET_TRAINING) if protonet_tasks else {}
    return (
        MethodEntry("maml", {"name": "maml", **inner}, dict(conv)),
        MethodEntry("fomaml", {"name": "fomaml", **inner}, dict(conv)),
        MethodEntry("anil", {"name": "anil", "inner_lr": 0.4, "inner_steps": 5}, dict(conv)),
        MethodEntry("protonet", {"name": "protonet"}, dict(conv), dict(proto_training), dict(proto_tasks)),
        MethodEntry(
            "protonet+ts",
            {"name": "protonet"},
            dict(conv),
            dict(proto_training),
            dict(proto_tasks),
            derived_from="protonet",
            calibrator="temperature",
        ),
        MethodEntry("matching", {"name": "matching", "learn_scale": True}, dict(conv)),
        MethodEntry("versa", {"name": "versa", "n_samples": 10, "variance": True}, dict(conv)),
        MethodEntry(
            "dkt",
            {
                "name": "dkt",
                "kernel": "rbf",
                "n_way": n_way,
                "noise_init": 0.1,
                "learn_noise": False,
                "class_probs": "max",
                "learn_temperature": True,
            },
            dict(conv),
        ),
        MethodEntry(
            "bmaml", {"name": "bmaml", "n_particles": 3, **inner, "leader_steps": 1}, dict(conv)
        ),
        MethodEntry(
            "platipus",
            {"name": "platipus", **inner, "n_samples": 3, "kl_weight": 0.001},
            dict(conv),
        ),
        MethodEntry(
            "ensemble",
            {"name": "ensemble", "members": 3, "base": {"name": "protonet"}},
            dict(conv),
            dict(proto_training),
            dict(proto_tasks),
        ),
    )


_CONV = {"name": "conv4", "hidden": 64, "norm": "task"}
_SMOKE_CONV = {"hidden": 8}
_SMOKE_REG = {"hidden": [8]}
_SINUSOID_TRAINING = {
    "meta_batch_size": 25,
    "lr": 1e-3,
    "val_every": 500,
    "checkpoint_every": 500,
    "log_every": 50,
}
_IMAGE_TRAINING = {
    "meta_batch_size": 4,
    "lr": 1e-3,
    "val_every": 200,
    "checkpoint_every": 50,
    "log_every": 10,
}
# Prototypical Networks' schedule (Snell et al. 2017: Adam halved every 2000 episodes, one
# episode per step); used with their higher-way training episodes (see _classification_methods)
_PROTONET_TRAINING = {"meta_batch_size": 1, "lr_decay_every": 2000, "lr_decay": 0.5}
_SMOKE = {
    "n_episodes": 4, "val_episodes": 2, "tasks_per_batch": 2, "budget_s": 30.0, "max_steps": 3,
    "training": {"meta_batch_size": 2, "val_every": 2, "checkpoint_every": 2, "log_every": 1},
}  # fmt: skip


def _sinusoid(k: int) -> Suite:
    return Suite(
        name=f"sinusoid_{k}shot",
        description=f"MAML's sinusoids, {k}-shot, 10 query points at training, 100 at test, x in [-5, 5]",
        kind="regression",
        tasks={"name": "sinusoid", "k_shot": k, "n_query": 10},
        test_overrides={"n_query": 100},
        n_episodes=600,
        tasks_per_batch=50,
        budget_s=120.0,
        training=dict(_SINUSOID_TRAINING),
        methods=_regression_methods(0.01, 1, _MLP, prior_weight=0.0),
        smoke={**_SMOKE, "test_overrides": {"n_query": 8}, "model": _SMOKE_REG},
    )


def _dkt_protocol(
    name: str, test_range: tuple[float, float] | None, train_suite: str | None
) -> Suite:
    where = (
        "in range, x in [-5, 5]"
        if test_range is None
        else f"out of range, every point in {list(test_range)}"
    )
    over: dict[str, Any] = {"n_query": 195}
    if test_range is not None:
        over["x_range"] = list(test_range)
    return Suite(
        name=name,
        description=f"DKT paper's protocol: noisy sinusoids (noise 0.1), 5 support + 5 query at training; "
        f"test 5 support + 195 query, {where}",
        kind="regression",
        tasks={"name": "sinusoid", "k_shot": 5, "n_query": 5, "noise_std": 0.1},
        test_overrides=over,
        n_episodes=200,
        tasks_per_batch=20,
        budget_s=120.0,
        training={**_SINUSOID_TRAINING, "meta_batch_size": 8},
        methods=_regression_methods(0.01, 1, _MLP, prior_weight=0.0),
        train_suite=train_suite,
        smoke={**_SMOKE, "test_overrides": {**over, "n_query": 8}, "model": _SMOKE_REG},
    )


def _linear_gaussian() -> Suite:
    linear = {"name": "mlp", "hidden": []}
    methods = tuple(
        m
        for m in _regression_methods(0.15, 5, linear, dkt_kernel="rbf", prior_std=1.0)
        if m.label not in ("reptile", "imaml")  # their inner loop settings are for 40-40 MLPs
    )
    return Suite(
        name="linear_gaussian",
        description="Bayesian linear regression y = w x + b + N(0, 0.3^2), w, b ~ N(0, 1), x in [-2, 2]; 5-shot; "
        "scored also by KL and W2 to the exact posterior predictive",
        kind="regression",
        tasks={
            "name": "linear_gaussian",
            "k_shot": 5,
            "n_query": 10,
            "noise_std": 0.3,
            "x_range": [-2.0, 2.0],
        },
        test_overrides={"n_query": 50},
        n_episodes=500,
        tasks_per_batch=50,
        budget_s=60.0,
        training={**_SINUSOID_TRAINING, "lr": 1e-2},
        methods=methods,
        reference="linear_gaussian",
        smoke={**_SMOKE, "test_overrides": {"n_query": 8}},
    )


def _gp_curves() -> Suite:
    return Suite(
        name="gp_curves",
        description="GP curves (RBF, random length and output scales), 3-50 context points, 50 targets",
        kind="regression",
        tasks={"name": "gp_curves", "min_context": 3, "max_context": 50, "n_target": 50},
        n_episodes=200,
        tasks_per_batch=20,
        budget_s=180.0,
        training={**_SINUSOID_TRAINING, "meta_batch_size": 16, "lr": 5e-4},
        methods=tuple(
            m for m in _regression_methods(0.01, 1, _MLP, prior_weight=0.0) if m.label not in ("reptile", "imaml")
        ),
        smoke={**_SMOKE, "tasks": {"max_context": 6, "n_target": 6}, "model": _SMOKE_REG},
    )


def _omniglot(n_way: int, k_shot: int) -> Suite:
    return Suite(
        name=f"omniglot_{n_way}w{k_shot}s",
        description=f"Omniglot {n_way}-way {k_shot}-shot, Vinyals split with rotations; 5 queries per class at "
        "training, 15 at test; Conv4-64 with TaskNorm",
        kind="classification",
        tasks={"name": "omniglot", "n_way": n_way, "k_shot": k_shot, "n_query": 5},
        test_overrides={"n_query": 15},
        n_episodes=600,
        val_episodes=50,
        tasks_per_batch=10,
        budget_s=600.0,
        training=dict(_IMAGE_TRAINING),
        # ProtoNets train 20-way (their paper: 60-way; at equal CPU, 300 s, 20-way one episode a
        # step reached 95.3% against 93.4% for 60-way, docs/benchmarks.md)
        methods=_classification_methods(n_way, _CONV, {"n_way": max(n_way, 20)}),
        smoke={
            **_SMOKE,
            "test_overrides": {"n_query": 2},
            "tasks": {"n_query": 2},
            "model": _SMOKE_CONV,
        },
    )


def _medical(dataset: str, positive_note: str, n_way: int = 2, test_options: dict[str, Any] | None = None) -> Suite:
    """Meta-train on MedNIST (random ``n_way``-way 5-shot episodes), test on a bundled MedMNIST
    dataset (``n_way`` must be its class count: the fixed-size heads of MAML and its relatives
    are sized by the training episodes)."""
    return Suite(
        name=f"medical_{dataset}",
        description=f"meta-trained on MedNIST (random {n_way}-way 5-shot episodes), tested on {dataset} {n_way}-way "
        f"5-shot (support from its train split, queries from its test split at natural prevalence; {positive_note})",
        kind="classification",
        tasks={
            "name": "mednist",
            "n_way": n_way,
            "k_shot": 5,
            "n_query": 10,
            "class_identity": "random",
        },
        test_tasks={
            "name": "medmnist",
            "dataset": dataset,
            "k_shot": 5,
            "n_query": 10,
            "prevalence": "natural",
            "support_split": "train",
            **(test_options or {}),
        },  # fmt: skip
        n_episodes=200,
        val_episodes=50,
        tasks_per_batch=10,
        budget_s=300.0,
        training=dict(_IMAGE_TRAINING),
        methods=_classification_methods(n_way, _CONV),
        smoke={
            **_SMOKE,
            # RetinaMNIST's rarest grade (5%) needs 20 queries an episode to appear at all
            "test_tasks": {"n_query": 2 if n_way == 2 else 4},
            "tasks": {"n_query": 2},
            "model": _SMOKE_CONV,
        },
    )


SUITES: Mapping[str, Suite] = {
    s.name: s
    for s in (
        _sinusoid(5),
        _sinusoid(10),
        _dkt_protocol("dkt_protocol", None, None),
        _dkt_protocol("dkt_protocol_out_of_range", (-5.0, 10.0), "dkt_protocol"),
        _linear_gaussian(),
        _gp_curves(),
        _omniglot(5, 1),
        _omniglot(5, 5),
        _omniglot(20, 1),
        _medical("pneumoniamnist", "pneumonia vs normal"),
        _medical("breastmnist", "malignant vs benign/normal"),
        # MedNIST has six classes, so its 5-way episodes train the 5-grade heads; RetinaMNIST is
        # RGB and MedNIST grey: converted to grey (ITU-R BT.601 luma) as in docs/medical.md
        _medical("retinamnist", "diabetic-retinopathy grades 0-4, grey", n_way=5, test_options={"channels": "grey"}),
    )
}
"""Every suite by name."""


def get_suite(name: str) -> Suite:
    """A suite by name.

    Raises:
        ConfigError: an unknown name (the message lists the suites).
    """
    if name not in SUITES:
        raise ConfigError(f"suite: unknown suite {name!r}; valid suites are: {', '.join(SUITES)}")
    return SUITES[name]


def select_methods(
    suite: Suite, labels: list[str] | tuple[str, ...] | None
) -> tuple[MethodEntry, ...]:
    """The entries of ``labels`` (default: all), in the suite's order; a derived method brings the
    method it is computed from.

    Raises:
        ConfigError: an unknown label (the message lists the suite's methods).
    """
    if labels is None:
        return suite.methods
    wanted = set()
    for label in labels:
        entry = suite.method(label)
        wanted.add(label)
        if entry.derived_from is not None:
            wanted.add(entry.derived_from)
    return tuple(m for m in suite.methods if m.label in wanted)


def _shrink_model(model: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    # a linear model (hidden: []) stays linear: LinearGaussian's exact predictive assumes it
    if not model or model.get("hidden") == []:
        return model
    return {**model, **over}


def smoke_suite(suite: Suite) -> Suite:
    """The suite shrunk to seconds: tiny backbones, a few episodes and steps (numbers mean nothing)."""
    sm = copy.deepcopy(suite.smoke)
    model_over = sm.pop("model", {})
    tasks_over = sm.pop("tasks", {})
    test_tasks_over = sm.pop("test_tasks", None)
    training = {**suite.training, **sm.pop("training", {})}
    methods = []
    for m in suite.methods:
        method = dict(m.method)
        for key in ("n_samples", "n_particles", "members"):
            if key in method:
                method[key] = min(int(method[key]), 2)
        for key in ("hidden", "r_dim", "z_dim"):
            if key in method:
                method[key] = 8
        if "n_heads" in method:
            method["n_heads"] = 2
        methods.append(replace(m, method=method, model=_shrink_model(m.model, model_over)))
    test_tasks = (
        None if suite.test_tasks is None else {**suite.test_tasks, **(test_tasks_over or {})}
    )
    return replace(
        suite,
        tasks={**suite.tasks, **tasks_over},
        test_tasks=test_tasks,
        training=training,
        methods=tuple(methods),
        **sm,
    )
