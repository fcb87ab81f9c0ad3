"""Study configs: which methods, which meta-training source, which medical datasets, which protocol.

A study YAML (see ``examples/configs/medical/``)::

    name: MedNIST -> MedMNIST, 5-shot
    protocol: cross_domain            # or leave_one_dataset_out
    methods:                          # label -> method/model sections (+ optional meta_train overrides)
      protonet: {method: {name: protonet}, model: {name: conv4, norm: group}}
      maml: {method: {name: maml, inner_lr: 0.4}, model: {name: conv4, norm: group}}
    meta_train: {name: mednist, n_way: 2, k_shot: 5, n_query: 10, class_identity: random}
    training: {steps: 600, meta_batch_size: 8, seed: 0}
    datasets:                         # label -> episode design on that dataset + positive class(es)
      pneumoniamnist:
        tasks: {name: medmnist, dataset: pneumoniamnist, k_shot: 5, n_query: 10,
                prevalence: natural, support_split: train}
        positive: 1
    evaluation: {n_episodes: 200, val_episodes: 100, seed: 1234, threshold: 0.5, target_specificity: 0.9}
    referral: {objective: accuracy, target_accuracy: 0.9}

Protocols:

- ``cross_domain``: every method is meta-trained once on ``meta_train`` (Omniglot, MedNIST, ...)
  and tested on every dataset.
- ``leave_one_dataset_out``: for each dataset d, every method is meta-trained on a
  ``medical_pool`` of the *other* datasets (``meta_train`` gives the episode shape and
  conversion options; its ``name`` must be ``medical_pool`` and its ``datasets`` are filled in per
  fold) and tested on d.

Validation episodes (queries from each dataset's ``val`` split, support as in ``tasks``) are used
only to fit the referral rule; the test episodes score it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from bayesmeta.exceptions import ConfigError

__all__ = [
    "PROTOCOLS",
    "STUDY_KEYS",
    "STUDY_EVALUATION_DEFAULTS",
    "REFERRAL_DEFAULTS",
    "load_study",
    "resolve_study",
    "dataset_pool_name",
]

PROTOCOLS: tuple[str, ...] = ("cross_domain", "leave_one_dataset_out")
STUDY_KEYS: tuple[str, ...] = (
    "name", "description", "protocol", "methods", "meta_train", "training", "datasets", "evaluation", "referral",
)  # fmt: skip
STUDY_EVALUATION_DEFAULTS: dict[str, Any] = {
    "n_episodes": 200,
    "val_episodes": 100,
    "seed": 1234,
    "tasks_per_batch": 10,
    "threshold": 0.5,
    "target_specificity": 0.9,
}
REFERRAL_DEFAULTS: dict[str, Any] = {
    "objective": "accuracy",
    "target_accuracy": 0.9,
    "max_referral": None,
    "costs": None,
    "score": None,
}
_METHOD_KEYS = ("method", "model", "meta_train")
_DATASET_KEYS = ("tasks", "positive", "description")


def _unknown(section: str, given: Mapping[str, Any], valid: tuple[str, ...]) -> None:
    bad = [k for k in given if k not in valid]
    if bad:
        raise ConfigError(f"{section}: unknown key(s) {', '.join(map(repr, bad))}; valid keys are: {', '.join(valid)}")


def dataset_pool_name(label: str, tasks: Mapping[str, Any]) -> str:
    """The ``medical_pool`` name of a dataset entry (bundled data only)."""
    from bayesmeta.tasks.families import POOL_DATASETS

    name = tasks.get("name")
    pool = "mednist" if name == "mednist" else tasks.get("dataset") if name == "medmnist" else None
    if pool not in POOL_DATASETS:
        raise ConfigError(
            f"datasets.{label}: leave-one-dataset-out meta-trains on bundled datasets only "
            f"({', '.join(POOL_DATASETS)}); this entry is {dict(tasks)}"
        )
    return str(pool)


def resolve_study(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a study dict and fill in defaults (a new dict).

    Raises:
        ConfigError: unknown keys, protocol or sections, naming the valid ones.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"study: expected a mapping with keys {', '.join(STUDY_KEYS)}, got {type(raw).__name__}")
    _unknown("study", raw, STUDY_KEYS)
    cfg = copy.deepcopy(dict(raw))
    cfg.setdefault("name", "medical few-shot risk study")
    cfg.setdefault("description", "")
    protocol = cfg.setdefault("protocol", "cross_domain")
    if protocol not in PROTOCOLS:
        raise ConfigError(f"protocol: expected one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    for sec in ("methods", "meta_train", "datasets"):
        if not isinstance(cfg.get(sec), Mapping) or not cfg[sec]:
            raise ConfigError(f"{sec}: this section is required (a non-empty mapping)")
    for label, m in cfg["methods"].items():
        if not isinstance(m, Mapping) or not isinstance(m.get("method"), Mapping):
            raise ConfigError(f"methods.{label}: expected a mapping with a 'method' section, got {m!r}")
        _unknown(f"methods.{label}", m, _METHOD_KEYS)
    for label, d in cfg["datasets"].items():
        if not isinstance(d, Mapping) or not isinstance(d.get("tasks"), Mapping):
            raise ConfigError(f"datasets.{label}: expected a mapping with a 'tasks' section, got {d!r}")
        _unknown(f"datasets.{label}", d, _DATASET_KEYS)
        d.setdefault("positive", 1)
        d.setdefault("description", "")
    if protocol == "leave_one_dataset_out":
        if cfg["meta_train"].get("name") != "medical_pool":
            raise ConfigError(
                f"meta_train.name: leave_one_dataset_out meta-trains on a medical_pool of the other datasets, "
                f"got {cfg['meta_train'].get('name')!r}"
            )
        if len(cfg["datasets"]) < 2:
            raise ConfigError("datasets: leave_one_dataset_out needs at least two datasets")
        for label, d in cfg["datasets"].items():
            dataset_pool_name(label, d["tasks"])
    ev = {**STUDY_EVALUATION_DEFAULTS, **(cfg.get("evaluation") or {})}
    _unknown("evaluation", ev, tuple(STUDY_EVALUATION_DEFAULTS))
    cfg["evaluation"] = ev
    ref = {**REFERRAL_DEFAULTS, **(cfg.get("referral") or {})}
    _unknown("referral", ref, tuple(REFERRAL_DEFAULTS))
    cfg["referral"] = ref
    cfg["training"] = dict(cfg.get("training") or {})
    return cfg


def load_study(path: str | Path) -> dict[str, Any]:
    """Read a study YAML and :func:`resolve_study` it."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"study: file {str(p)!r} not found")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"study: {p} is not valid YAML: {e}") from None
    return resolve_study(raw or {})
