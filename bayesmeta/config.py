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
import math
import re
import types
import typing
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from bayesmeta.devices import DTYPES, check_device_name
from bayesmeta.exceptions import BayesMetaError, ConfigError, ShapeError
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
    iter_episodes,
    omniglot,
)
from bayesmeta.tasks.episodes import TaskSource
from bayesmeta.tasks.families import CLINICAL_KEYS, MEDICAL_FAMILIES, family_probe, medical_family
from bayesmeta.tasks.gp_curves import GPCurves
from bayesmeta.training import MetaTrainer

__all__ = [
    "METHODS",
    "MODELS",
    "TASKS",
    "MethodSpec",
    "TaskSpec",
    "load_config",
    "parse_yaml",
    "resolve_config",
    "build_model",
    "build_learner",
    "build_task_source",
    "build_episodes",
    "build_episode_stream",
]

SECTIONS = ("method", "model", "tasks", "training", "evaluation")
def _trainer_defaults(*names: str) -> dict[str, Any]:
    """The ``MetaTrainer`` constructor's own defaults for ``names``: one place for each default."""
    params = inspect.signature(MetaTrainer.__init__).parameters
    return {n: params[n].default for n in names}


# The config's training section: MetaTrainer's keyword options (their defaults read off its
# signature, so the CLI and the Python API cannot drift apart), plus the keys only a config has.
TRAINING_DEFAULTS: dict[str, Any] = {
    "steps": 1000,  # MetaTrainer requires `steps`; a config may leave it out
    **_trainer_defaults("meta_batch_size", "lr", "lr_decay_every", "lr_decay", "grad_clip", "seed"),
    "val_episodes": 50,  # a count here; MetaTrainer takes the built episodes
    **_trainer_defaults("val_every", "checkpoint_every", "log_every", "max_minutes"),
    "device": "cpu",
    "dtype": "float32",
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
    #: the callable whose type hints the options are checked against at load time (None: the
    #: family's builder checks its own options)
    signature: Callable[..., Any] | None = None


#: Omniglot's ``tasks.train_split`` choices: the 1028 training characters, or those plus the 172
#: validation ones (1200, the papers' final training set once hyperparameters are chosen).
OMNIGLOT_TRAIN_SPLITS = ("train", "trainval")


def _omniglot_source(opts: dict[str, Any], split: str) -> TaskSource:
    opts = dict(opts)
    rotations = opts.pop("rotations", True)
    train_split = opts.pop("train_split", "train")
    # Only meta-training draws from ``train_split``; validation and test keep their own classes.
    data_split = train_split if split == "train" else split
    if split == "val" and train_split == "trainval":
        warnings.warn(
            "tasks.train_split: 'trainval' meta-trains on the validation characters, so validation "
            "episodes (checkpoint selection, calibration) score classes seen in training and are "
            "optimistic; evaluate with --checkpoint last",
            UserWarning,
            stacklevel=2,
        )
    # Rotations on the fly: storing all four copies of the train split would take ~260 MB.
    return FewShotSampler(omniglot(data_split, rotations=False), augment_rotations=rotations, **opts)  # type: ignore[arg-type]


def _regression_source(cls: type) -> Callable[[dict[str, Any], str], TaskSource]:
    def build(opts: dict[str, Any], split: str) -> TaskSource:
        # Synthetic families have no class split: train, val and test differ by their seeds.
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in opts.items()})

    return build


def _keys(fn: Callable[..., Any], drop: tuple[str, ...] = ("self",)) -> tuple[str, ...]:
    return tuple(p for p in inspect.signature(fn).parameters if p not in drop)


TASKS: Mapping[str, TaskSpec] = {
    "sinusoid": TaskSpec(
        "regression", _regression_source(Sinusoid), _keys(Sinusoid.__init__, ("self", "dtype")), signature=Sinusoid.__init__
    ),
    "linear_gaussian": TaskSpec(
        "regression", _regression_source(LinearGaussian), _keys(LinearGaussian.__init__, ("self", "dtype")),
        signature=LinearGaussian.__init__,
    ),
    "gp_curves": TaskSpec(
        "regression", _regression_source(GPCurves), _keys(GPCurves.__init__, ("self", "dtype")), signature=GPCurves.__init__
    ),
    "omniglot": TaskSpec(
        "classification", _omniglot_source, ("n_way", "k_shot", "n_query", "rotations", "train_split"),
        signature=FewShotSampler.__init__,
    ),
    **{
        fam: TaskSpec(
            "classification", medical_family(fam), (*extra, *CLINICAL_KEYS),
            lambda o, fam=fam: family_probe(fam, o),
        )
        for fam, extra in MEDICAL_FAMILIES.items()
    },
}


# ------------------------------------------------------------------------------ YAML
class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a mapping key given twice (PyYAML silently keeps the last one,
    so ``lr`` written twice trains with whichever came second)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key: let PyYAML's own constructor report it
            continue
        if first is not None:
            raise ConfigError(
                f"config: duplicate key {key!r} at line {line} (first given at line {first}); "
                f"give every key once"
            )
        seen[key] = line
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def parse_yaml(text: str, source: str = "config") -> Any:
    """Parse YAML with the safe loader, refusing duplicate keys.

    Raises:
        ConfigError: invalid YAML or a duplicate key (with its line numbers).
    """
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except ConfigError as e:  # a duplicate key: say in which file
        raise ConfigError(f"config: {source}: {str(e).removeprefix('config: ')}") from None
    except yaml.YAMLError as e:
        msg = " ".join(str(e).split())
        raise ConfigError(f"config: {source} is not valid YAML: {msg}") from None


# ------------------------------------------------------------------------------ option types
_FLOAT_TEXT = r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?"


def _hint_text(hint: Any) -> str:
    """A reader's description of a type hint: ``an integer``, ``a list of 2 numbers``..."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return "null"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_hint_text(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if hint is bool:
        return "true or false"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is str:
        return "a string"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_hint_text(args[0]).removeprefix('an ').removeprefix('a ')}s"
        return f"a list of {len(args)} " + ("numbers" if all(a is float for a in args) else "values")
    if origin in (list, Sequence, typing.Sequence):
        inner = _hint_text(args[0]) if args else "value"
        return f"a list of {inner.removeprefix('an ').removeprefix('a ')}s"
    return getattr(hint, "__name__", str(hint))


def _coerce(value: Any, hint: Any) -> tuple[bool, Any]:
    """``(matches, value)``: whether ``value`` fits ``hint``, and the value to use.

    The one conversion: YAML 1.1 reads ``1e-3`` (no dot) as a string, so a string that spells a
    number is accepted where a float is expected. Nothing else is converted: ``hidden: '40'``
    is refused, not read as ``'4', '0'``.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True, value
    if hint is type(None):
        return value is None, value
    if origin in (typing.Union, types.UnionType):
        for a in args:
            ok, v = _coerce(value, a)
            if ok:
                return True, v
        return False, value
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args), value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        if isinstance(value, str):
            if re.fullmatch(_FLOAT_TEXT, value.strip()):
                return True, float(value)
            return False, value
        return isinstance(value, int | float) and not isinstance(value, bool), value
    if hint is str:
        return isinstance(value, str), value
    if origin is tuple or origin in (list, Sequence, typing.Sequence):
        if not isinstance(value, list | tuple):
            return False, value
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                return False, value
            pairs = list(zip(value, args))
        else:
            inner = args[0] if args else Any
            pairs = [(v, inner) for v in value]
        out = []
        for v, a in pairs:
            ok, c = _coerce(v, a)
            if not ok:
                return False, value
            out.append(c)
        return True, out
    if isinstance(hint, type):
        return isinstance(value, hint), value
    return True, value  # a hint this checker does not know (a Module, a type[...]): the build decides


def _check_options(section: str, opts: dict[str, Any], fn: Callable[..., Any]) -> None:
    """Check (and where documented, convert) ``opts`` in place against ``fn``'s type hints."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - unresolvable annotations: the build checks instead
        return
    for key, value in list(opts.items()):
        if key == "name" or key not in hints:
            continue
        ok, converted = _coerce(value, hints[key])
        if not ok:
            raise ConfigError(f"{section}.{key}: expected {_hint_text(hints[key])}, got {value!r}")
        opts[key] = converted


def _int_option(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (maximum is not None and value > maximum):
        upper = "" if maximum is None else f" and <= {maximum}"
        raise ConfigError(f"{name}: expected an integer >= {minimum}{upper}, got {value!r}")
    return value


def _number_option(name: str, value: Any, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    ok, v = _coerce(value, float)
    if not ok or not (math.isfinite(float(v)) and float(v) > 0):
        none = " or null" if allow_none else ""
        raise ConfigError(f"{name}: expected a positive finite number{none}, got {value!r}")
    return float(v)


_SEED_MAX = 2**63 - 1


def _check_training(tr: dict[str, Any]) -> None:
    """Validate every ``training`` option (types and ranges) in place."""
    for key, minimum in (("steps", 0), ("meta_batch_size", 1), ("val_episodes", 0), ("val_every", 1),
                         ("checkpoint_every", 1), ("log_every", 1)):
        _int_option(f"training.{key}", tr[key], minimum)
    _int_option("training.seed", tr["seed"], 0, _SEED_MAX)
    tr["lr"] = _number_option("training.lr", tr["lr"])
    if tr["lr_decay_every"] is not None:
        _int_option("training.lr_decay_every", tr["lr_decay_every"], 1)
    tr["lr_decay"] = _number_option("training.lr_decay", tr["lr_decay"])
    if tr["lr_decay"] > 1:
        raise ConfigError(f"training.lr_decay: expected a factor in (0, 1], got {tr['lr_decay']!r}")
    tr["grad_clip"] = _number_option("training.grad_clip", tr["grad_clip"], allow_none=True)
    tr["max_minutes"] = _number_option("training.max_minutes", tr["max_minutes"], allow_none=True)
    check_device_name(tr["device"], "training.device")
    if tr["dtype"] not in DTYPES:
        raise ConfigError(f"training.dtype: expected one of {', '.join(DTYPES)}, got {tr['dtype']!r}")


def _check_evaluation(ev: dict[str, Any]) -> None:
    """Validate every ``evaluation`` option except ``tasks`` (checked with the task family)."""
    _int_option("evaluation.n_episodes", ev["n_episodes"], 1)
    _int_option("evaluation.seed", ev["seed"], 0, _SEED_MAX)
    _int_option("evaluation.tasks_per_batch", ev["tasks_per_batch"], 1)
    if not isinstance(ev["tasks"], Mapping):
        raise ConfigError(f"evaluation.tasks: expected a mapping of task options, got {ev['tasks']!r}")


_COUNT_KEYS = ("n_way", "k_shot", "n_query", "min_context", "max_context", "n_target", "in_features")


def _check_task_options(section: str, opts: dict[str, Any], tspec: TaskSpec) -> None:
    if tspec.signature is not None:
        _check_options(section, opts, tspec.signature)
    for key in _COUNT_KEYS:
        if key in opts:
            _int_option(f"{section}.{key}", opts[key], 1)
    if "rotations" in opts and not isinstance(opts["rotations"], bool):
        raise ConfigError(f"{section}.rotations: expected true or false, got {opts['rotations']!r}")
    if "train_split" in opts and opts["train_split"] not in OMNIGLOT_TRAIN_SPLITS:
        raise ConfigError(
            f"{section}.train_split: expected one of {', '.join(map(repr, OMNIGLOT_TRAIN_SPLITS))}, "
            f"got {opts['train_split']!r}"
        )


def _dry_build(cfg: dict[str, Any]) -> None:
    """Build the learner (and synthetic task sources) once so that value errors surface at load
    time with the section named; the global RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        try:
            build_learner(cfg)
        except ConfigError:
            raise
        except (BayesMetaError, TypeError, ValueError) as e:
            where = "method/model" if cfg.get("model") else "method"
            raise ConfigError(f"{where}: cannot build {cfg['method']['name']!r}: {e}") from None
        if TASKS[cfg["tasks"]["name"]].kind == "regression":
            for evaluation, section in ((False, "tasks"), (True, "evaluation.tasks")):
                try:
                    build_task_source(cfg, "train", evaluation=evaluation)
                except (BayesMetaError, TypeError, ValueError) as e:
                    raise ConfigError(f"{section}: {e}") from None


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


def resolve_config(raw: Mapping[str, Any], *, check_build: bool = True) -> dict[str, Any]:
    """Validate a config dict and fill in defaults; returns a new, fully resolved dict.

    Every option is checked here, at load time, not when training reaches it: section keys,
    types against the constructors' type hints (``model.hidden: '40'`` is refused as given),
    ranges of the training and evaluation options, the device's spelling (whether this machine
    has it is checked when a run starts), and, with ``check_build``, a trial build of the learner
    and of synthetic task families (the global RNG is left untouched).

    Raises:
        ConfigError: an unknown section, key, method, model or task family (the message lists the
            valid ones), a missing required section, or an option of the wrong type or range
            (the message names ``section.key``, what was expected and what was given).
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

    _check_task_options("tasks", cfg["tasks"], tspec)
    _check_options("method", cfg["method"], spec.cls.__init__)

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
        _check_options("model", cfg["model"], MODELS[cfg["model"]["name"]].__init__)
        if probe is not None:
            _check_image_input(cfg, probe)

    for sec in ("model", "training", "evaluation"):
        if cfg.get(sec) is not None and not isinstance(cfg[sec], Mapping):
            raise ConfigError(f"{sec}: expected a mapping of options, got {cfg[sec]!r}")
    training = {**TRAINING_DEFAULTS, **(cfg.get("training") or {})}
    _check_keys("training", training, tuple(TRAINING_DEFAULTS))
    _check_training(training)
    cfg["training"] = training
    evaluation = {**EVALUATION_DEFAULTS, **(cfg.get("evaluation") or {})}
    _check_keys("evaluation", evaluation, tuple(EVALUATION_DEFAULTS))
    _check_evaluation(evaluation)
    _check_keys("evaluation.tasks", evaluation["tasks"], tspec.keys)
    evaluation["tasks"] = dict(evaluation["tasks"])
    _check_task_options("evaluation.tasks", evaluation["tasks"], tspec)
    cfg["evaluation"] = evaluation
    if check_build:
        _dry_build(cfg)
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
        what = "is a directory, not a file" if p.is_dir() else "not found"
        raise ConfigError(f"config: expected a YAML file, {str(p)!r} {what}")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config: cannot read {str(p)!r}: {e}") from None
    return resolve_config(parse_yaml(text, str(p)) or {})


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


def _episode_args(cfg: Mapping[str, Any], split: str, evaluation_tasks: bool = False) -> tuple[TaskSource, int, int, int]:
    ev = cfg["evaluation"]
    if split == "val":
        n, seed = int(cfg["training"]["val_episodes"]), int(ev["seed"]) + 1_000_003
    else:
        n, seed = int(ev["n_episodes"]), int(ev["seed"])
    source = build_task_source(cfg, split, evaluation=split == "test" or evaluation_tasks)
    return source, n, seed, int(ev["tasks_per_batch"])


def build_episode_stream(cfg: Mapping[str, Any], split: str) -> tuple[Iterator[TaskBatch], int]:
    """The episodes of :func:`build_episodes`, drawn one batch at a time, and the batch count.

    The same tensors as the list, without holding them all in memory (600 Omniglot 20-way
    episodes are ~600 MB of images).
    """
    source, n, seed, per_batch = _episode_args(cfg, split)
    return iter_episodes(source, n, seed=seed, tasks_per_batch=per_batch), -(-n // per_batch)


def build_episodes(cfg: Mapping[str, Any], split: str, evaluation_tasks: bool = False) -> list[TaskBatch]:
    """Fixed evaluation (``test``) or validation (``val``) episodes of a resolved config.

    Test episodes use ``evaluation.seed``; validation episodes a seed derived from it, so the
    two never coincide for synthetic families that have no class split. ``evaluation_tasks``
    applies the ``evaluation.tasks`` overrides to validation episodes too (a calibrator fitted on
    them must see the test conditions, e.g. 20-way).
    """
    source, n, seed, per_batch = _episode_args(cfg, split, evaluation_tasks)
    return fixed_episodes(source, n, seed=seed, tasks_per_batch=per_batch)


