"""YAML run configs: parse, validate, and build the learner, task sources and episodes.

A config has five sections::

    method:     {name: maml, inner_lr: 0.01, inner_steps: 1}
    model:      {name: mlp, hidden: [40, 40]}
    tasks:      {name: sinusoid, k_shot: 10, n_query: 10}
    training:   {steps: 2000, meta_batch_size: 25, lr: 0.001, seed: 0}
    evaluation: {n_episodes: 600, seed: 1234, tasks: {n_way: 20}}

``evaluation.n_episodes`` counts tasks (episodes); ``tasks_per_batch`` only groups them for
compute and does not change which tasks are drawn. ``evaluation.tasks`` overrides task options
at evaluation only (a 20-way test of a 5-way model,
out-of-range query inputs...). Unknown sections, keys, methods, models and task families are
:class:`~bayesmeta.exceptions.ConfigError` s that name the culprit and list the valid choices.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from bayesmeta.exceptions import ConfigError, ShapeError
from bayesmeta.inference.alpaca import ALPaCA
from bayesmeta.inference.anp import ANP
from bayesmeta.inference.base import MetaLearner
from bayesmeta.inference.bmaml import BMAML
from bayesmeta.inference.cnp import CNP
from bayesmeta.inference.dkt import DKT
from bayesmeta.inference.ensemble import Ensemble
from bayesmeta.inference.imaml import IMAML
from bayesmeta.inference.latent_np import NP
from bayesmeta.inference.maml import MAML
from bayesmeta.inference.matching import MatchingNet
from bayesmeta.inference.platipus import PLATIPUS
from bayesmeta.inference.protonet import ProtoNet
from bayesmeta.inference.reptile import Reptile
from bayesmeta.inference.versa import VERSA
from bayesmeta.models import MLP, Conv4
from bayesmeta.tasks import (
    FewShotSampler,
    LinearGaussian,
    Sinusoid,
    TaskBatch,
    fixed_episodes,
    omniglot,
)
from bayesmeta.tasks.episodes import TaskSource
from bayesmeta.tasks.families import CLINICAL_KEYS, MEDICAL_FAMILIES, family_probe, medical_family
from bayesmeta.tasks.gp_curves import GPCurves

__all__ = [
    "METHODS",
    "MODELS",
    "TASKS",
    "MethodSpec",
    "TaskSpec",
    "load_config",
    "resolve_config",
    "build_model",
    "build_learner",
    "build_task_source",
    "build_episodes",
]

SECTIONS = ("method", "model", "tasks", "training", "evaluation")
TRAINING_DEFAULTS: dict[str, Any] = {
    "steps": 1000,
    "meta_batch_size": 16,
    "lr": 1e-3,
    "grad_clip": 10.0,
    "seed": 0,
    "val_episodes": 50,
    "val_every": 250,
    "checkpoint_every": 250,
    "log_every": 10,
    "max_minutes": None,
}
EVALUATION_DEFAULTS: dict[str, Any] = {"n_episodes": 200, "seed": 1234, "tasks_per_batch": 1, "tasks": {}}


# ------------------------------------------------------------------------------ registries
@dataclass(frozen=True)
class MethodSpec:
    """How a config's ``method.name`` becomes a learner.

    Attributes:
        cls: the learner class; its ``config_keys`` are the options a config may set.
        fixed: options implied by the name (``fomaml`` is MAML with ``first_order=True``).
        head: whether the backbone needs a linear head (sized to n_way / Dy when not given).
        backbone: whether the learner takes a backbone from the ``model`` section; learners
            without one (neural processes) get ``x_dim``/``y_dim`` from the task family and
            refuse a non-empty ``model`` section.
    """

    cls: type[MetaLearner]
    fixed: Mapping[str, Any] = field(default_factory=dict)
    head: bool = True
    backbone: bool = True


METHODS: Mapping[str, MethodSpec] = {
    "maml": MethodSpec(MAML),
    "fomaml": MethodSpec(MAML, {"first_order": True}),
    "metasgd": MethodSpec(MAML, {"learn_inner_lr": True}),
    "anil": MethodSpec(MAML, {"adapt": "head"}),
    "protonet": MethodSpec(ProtoNet, head=False),
    "dkt": MethodSpec(DKT, head=False),
    "bmaml": MethodSpec(BMAML),
    "platipus": MethodSpec(PLATIPUS),
    "versa": MethodSpec(VERSA, head=False),
    "cnp": MethodSpec(CNP, backbone=False),
    "np": MethodSpec(NP, backbone=False),
    "anp": MethodSpec(ANP, backbone=False),
    # method: {name: ensemble, base: {name: maml, ...}, members: 5, seed: 0}; model as for the base
    "ensemble": MethodSpec(Ensemble),
    "reptile": MethodSpec(Reptile),
    "imaml": MethodSpec(IMAML),
    "alpaca": MethodSpec(ALPaCA, head=False),
    "matching": MethodSpec(MatchingNet, head=False),
}

MODELS: Mapping[str, type[nn.Module]] = {"mlp": MLP, "conv4": Conv4}


@dataclass(frozen=True)
class TaskSpec:
    """A task family: its kind and a builder ``(options, split) -> TaskSource``."""

    kind: str
    build: Callable[[dict[str, Any], str], TaskSource]
    keys: tuple[str, ...]
    #: image families: ``options -> LabelledDataset`` (test split) that the backbone is checked against
    probe: Callable[[dict[str, Any]], Any] | None = None


def _omniglot_source(opts: dict[str, Any], split: str) -> TaskSource:
    opts = dict(opts)
    rotations = opts.pop("rotations", True)
    # Rotations on the fly: storing all four copies of the train split would take ~260 MB.
    return FewShotSampler(omniglot(split, rotations=False), augment_rotations=rotations, **opts)  # type: ignore[arg-type]


def _regression_source(cls: type) -> Callable[[dict[str, Any], str], TaskSource]:
    def build(opts: dict[str, Any], split: str) -> TaskSource:
        # Synthetic families have no class split: train, val and test differ by their seeds.
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in opts.items()})

    return build


def _keys(fn: Callable[..., Any], drop: tuple[str, ...] = ("self",)) -> tuple[str, ...]:
    return tuple(p for p in inspect.signature(fn).parameters if p not in drop)


TASKS: Mapping[str, TaskSpec] = {
    "sinusoid": TaskSpec("regression", _regression_source(Sinusoid), _keys(Sinusoid.__init__, ("self", "dtype"))),
    "linear_gaussian": TaskSpec(
        "regression", _regression_source(LinearGaussian), _keys(LinearGaussian.__init__, ("self", "dtype"))
    ),
    "gp_curves": TaskSpec("regression", _regression_source(GPCurves), _keys(GPCurves.__init__, ("self", "dtype"))),
    "omniglot": TaskSpec(
        "classification", _omniglot_source, ("n_way", "k_shot", "n_query", "rotations")
    ),
    **{
        fam: TaskSpec(
            "classification", medical_family(fam), (*extra, *CLINICAL_KEYS),
            lambda o, fam=fam: family_probe(fam, o),
        )
        for fam, extra in MEDICAL_FAMILIES.items()
    },
}


# ------------------------------------------------------------------------------ validation
def _check_keys(section: str, given: Mapping[str, Any], valid: tuple[str, ...]) -> None:
    unknown = [k for k in given if k not in valid]
    if unknown:
        raise ConfigError(
            f"{section}: unknown key(s) {', '.join(map(repr, unknown))}; valid keys are: {', '.join(valid)}"
        )


def _pick(section: str, registry: Mapping[str, Any], cfg: Mapping[str, Any]) -> str:
    name = cfg.get("name")
    if name not in registry:
        raise ConfigError(
            f"{section}.name: unknown {section} {name!r}; valid choices are: {', '.join(sorted(registry))}"
        )
    return str(name)


def _resolve_model(
    model: dict[str, Any], spec: MethodSpec, tspec: TaskSpec, tasks: Mapping[str, Any]
) -> dict[str, Any]:
    model.setdefault("name", "conv4" if tspec.kind == "classification" else "mlp")
    mname = _pick("model", MODELS, model)
    _check_keys("model", model, ("name", *_keys(MODELS[mname].__init__)))
    if mname == "mlp":
        model.setdefault("in_features", tasks.get("in_features", 1))
        if spec.head:
            model.setdefault("out_features", 1 if tspec.kind == "regression" else tasks.get("n_way", 5))
        else:
            # feature-based learners use the body only: no head whose weights never get a gradient
            model.setdefault("out_features", None)
    elif mname == "conv4" and spec.head:
        model.setdefault("out_features", tasks.get("n_way", 5))
    return model


def _check_image_input(cfg: dict[str, Any], probe: Any) -> None:
    """Image families: default ``in_channels`` from the data, refuse a mismatched backbone."""
    from bayesmeta.tasks.medical import check_backbone_input

    if cfg["model"]["name"] == "conv4":
        cfg["model"].setdefault("in_channels", int(probe.example_shape[0]))
    try:
        check_backbone_input(probe, build_model(cfg))
    except ShapeError as e:
        raise ConfigError(f"tasks ({cfg['tasks']['name']}) vs model: {e}") from None


def resolve_config(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a config dict and fill in defaults; returns a new, fully resolved dict.

    Raises:
        ConfigError: an unknown section, key, method, model or task family (the message lists the
            valid ones), or a missing required section.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config: expected a mapping with sections {', '.join(SECTIONS)}, got {type(raw).__name__}")
    _check_keys("config", raw, SECTIONS)
    cfg = copy.deepcopy(dict(raw))
    for sec in ("method", "tasks"):
        if not isinstance(cfg.get(sec), Mapping):
            raise ConfigError(f"{sec}: this section is required (a mapping with at least 'name')")
    method = _pick("method", METHODS, cfg["method"])
    spec = METHODS[method]
    _check_keys("method", cfg["method"], ("name", *spec.cls.config_keys))
    if method == "ensemble":
        cfg["method"] = _resolve_ensemble(cfg["method"])
        spec = METHODS[cfg["method"]["base"]["name"]]
    task_name = _pick("tasks", TASKS, cfg["tasks"])
    tspec = TASKS[task_name]
    _check_keys("tasks", cfg["tasks"], ("name", *tspec.keys))

    model = dict(cfg.get("model") or {})
    if not spec.backbone:
        if model:
            raise ConfigError(
                f"model: {method!r} builds its own encoder and decoder; leave the model section empty, "
                f"got keys {', '.join(map(repr, model))}"
            )
        cfg["model"] = {}
        model = None
    probe = None
    if tspec.probe is not None:
        probe = tspec.probe({k: v for k, v in cfg["tasks"].items() if k != "name"})
        cfg["tasks"].setdefault("n_way", len(cfg["tasks"].get("classes") or probe.class_names))
    if model is not None:
        cfg["model"] = _resolve_model(model, spec, tspec, cfg["tasks"])
        if probe is not None:
            _check_image_input(cfg, probe)

    training = {**TRAINING_DEFAULTS, **(cfg.get("training") or {})}
    _check_keys("training", training, tuple(TRAINING_DEFAULTS))
    cfg["training"] = training
    evaluation = {**EVALUATION_DEFAULTS, **(cfg.get("evaluation") or {})}
    _check_keys("evaluation", evaluation, tuple(EVALUATION_DEFAULTS))
    _check_keys("evaluation.tasks", evaluation["tasks"], tspec.keys)
    cfg["evaluation"] = evaluation
    return cfg


def _resolve_ensemble(method: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``method: {name: ensemble, base: {...}, members: M, seed: s}`` (members default 5)."""
    out = dict(method)
    base = out.get("base")
    if not isinstance(base, Mapping):
        raise ConfigError("method.base: an ensemble needs the member learner's method, e.g. base: {name: maml}")
    name = _pick("method.base", {k: v for k, v in METHODS.items() if k != "ensemble"}, base)
    _check_keys("method.base", base, ("name", *METHODS[name].cls.config_keys))
    out["base"] = dict(base)
    members = out.setdefault("members", 5)
    if isinstance(members, bool) or not isinstance(members, int) or members < 1:
        raise ConfigError(f"method.members: expected an integer >= 1, got {members!r}")
    seed = out.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ConfigError(f"method.seed: expected an integer, got {seed!r}")
    return out


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file and :func:`resolve_config` it."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config: file {str(p)!r} not found")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"config: {p} is not valid YAML: {e}") from None
    return resolve_config(raw or {})


# ------------------------------------------------------------------------------ builders
def task_kind(cfg: Mapping[str, Any]) -> str:
    """``"classification"`` or ``"regression"`` for a resolved config."""
    return TASKS[cfg["tasks"]["name"]].kind


def build_model(cfg: Mapping[str, Any]) -> nn.Module:
    """The backbone of a resolved config's ``model`` section."""
    opts = {k: v for k, v in cfg["model"].items() if k != "name"}
    if isinstance(opts.get("hidden"), list):
        opts["hidden"] = tuple(opts["hidden"])
    return MODELS[cfg["model"]["name"]](**opts)


def build_learner(cfg: Mapping[str, Any]) -> MetaLearner:
    """The learner (with a freshly initialized backbone) of a resolved config.

    An ensemble builds its base learner ``members`` times, member k under the seed
    ``method.seed + k`` (``method.seed`` defaults to ``training.seed``).
    """
    if cfg["method"]["name"] == "ensemble":
        base_cfg = {**cfg, "method": cfg["method"]["base"]}
        seed = cfg["method"].get("seed")
        seed = int(cfg.get("training", {}).get("seed", 0) if seed is None else seed)
        return Ensemble(lambda: build_learner(base_cfg), n_members=int(cfg["method"]["members"]), seed=seed)
    spec = METHODS[cfg["method"]["name"]]
    opts = {**{k: v for k, v in cfg["method"].items() if k != "name"}, **spec.fixed}
    params = inspect.signature(spec.cls.__init__).parameters
    if "task_kind" in params:
        given = opts.get("task_kind")
        if given is not None and given != task_kind(cfg):
            raise ConfigError(
                f"method.task_kind: {given!r} contradicts the task family {cfg['tasks']['name']!r}, "
                f"which is {task_kind(cfg)}"
            )
        opts["task_kind"] = task_kind(cfg)
    if not spec.backbone:
        opts.setdefault("x_dim", cfg["tasks"].get("in_features", 1))
        opts.setdefault("y_dim", 1)
        opts.pop("task_kind", None)
    try:
        if not spec.backbone:
            return spec.cls(**opts)  # type: ignore[call-arg]
        return spec.cls(build_model(cfg), **opts)  # type: ignore[call-arg]
    except TypeError as e:
        raise ConfigError(f"method: cannot build {cfg['method']['name']!r} from {opts}: {e}") from None


def build_task_source(cfg: Mapping[str, Any], split: str, evaluation: bool = False) -> TaskSource:
    """The task source for ``split`` (``train``, ``val`` or ``test``).

    With ``evaluation=True`` the ``evaluation.tasks`` overrides apply.
    """
    tspec = TASKS[cfg["tasks"]["name"]]
    opts = {k: v for k, v in cfg["tasks"].items() if k != "name"}
    if evaluation:
        opts.update(cfg["evaluation"]["tasks"])
    return tspec.build(opts, split)


def build_episodes(cfg: Mapping[str, Any], split: str, evaluation_tasks: bool = False) -> list[TaskBatch]:
    """Fixed evaluation (``test``) or validation (``val``) episodes of a resolved config.

    Test episodes use ``evaluation.seed``; validation episodes a seed derived from it, so the
    two never coincide for synthetic families that have no class split. ``evaluation_tasks``
    applies the ``evaluation.tasks`` overrides to validation episodes too (a calibrator fitted on
    them must see the test conditions, e.g. 20-way).
    """
    ev = cfg["evaluation"]
    if split == "val":
        n, seed = int(cfg["training"]["val_episodes"]), int(ev["seed"]) + 1_000_003
    else:
        n, seed = int(ev["n_episodes"]), int(ev["seed"])
    source = build_task_source(cfg, split, evaluation=split == "test" or evaluation_tasks)
    return fixed_episodes(source, n, seed=seed, tasks_per_batch=int(ev["tasks_per_batch"]))


