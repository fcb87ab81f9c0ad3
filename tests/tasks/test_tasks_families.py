"""Config task families for medical data: medmnist, mednist, npz, image_folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bayesmeta.config import build_episodes, build_learner, build_task_source, resolve_config
from bayesmeta.exceptions import ConfigError, DataError
from bayesmeta.tasks import ClinicalSampler


def _cfg(tasks, method="protonet", model=None):
    return {
        "method": {"name": method},
        "model": model or {"name": "conv4", "norm": "group", "hidden": 8},
        "tasks": tasks,
        "training": {"val_episodes": 2},
        "evaluation": {"n_episodes": 3},
    }


def test_medmnist_family_with_clinical_design():
    cfg = resolve_config(_cfg({"name": "medmnist", "dataset": "pneumoniamnist", "n_way": 2, "k_shot": 5, "n_query": 10,
                               "prevalence": "natural", "support_split": "train"}))
    src = build_task_source(cfg, "test", evaluation=True)
    assert isinstance(src, ClinicalSampler)
    assert src.support.source == "pneumoniamnist/train" and src.query.source == "pneumoniamnist/test"
    assert src.query_counts() == [8, 12]  # 37.5% / 62.5% of 20
    val = build_task_source(cfg, "val")
    assert val.query.source == "pneumoniamnist/val"
    eps = build_episodes(cfg, "test")
    assert sum(e.n_tasks for e in eps) == 3


def test_n_way_and_in_channels_default_from_the_data():
    cfg = resolve_config(_cfg({"name": "medmnist", "dataset": "retinamnist", "k_shot": 2, "n_query": 4}, method="maml",
                              model={"name": "conv4", "norm": "group", "hidden": 8}))
    assert cfg["tasks"]["n_way"] == 5 and cfg["model"]["in_channels"] == 3 and cfg["model"]["out_features"] == 5
    learner = build_learner(cfg)
    batch = build_task_source(cfg, "train").sample(1)
    assert learner(batch).probs.shape == (1, 20, 5)


def test_channel_mismatch_in_a_config_names_the_fix():
    with pytest.raises(ConfigError, match=r"retinamnist/test: images have 3 channel.*channels='grey'"):
        resolve_config(_cfg({"name": "medmnist", "dataset": "retinamnist", "k_shot": 2, "n_query": 4},
                            model={"name": "conv4", "norm": "group", "in_channels": 1}))
    cfg = resolve_config(_cfg({"name": "medmnist", "dataset": "retinamnist", "k_shot": 2, "n_query": 4, "channels": "grey"},
                              model={"name": "conv4", "norm": "group", "in_channels": 1}))
    assert build_task_source(cfg, "test").sample(1).support_x.shape[-3:] == (1, 28, 28)
    with pytest.raises(ConfigError, match=r"expects 28x28; resize with size=28"):
        resolve_config(_cfg({"name": "mednist", "k_shot": 1, "n_query": 1, "class_identity": "random", "n_way": 2, "size": 32},
                            method="maml"))


def test_mednist_family_and_errors():
    cfg = resolve_config(_cfg({"name": "mednist", "n_way": 3, "k_shot": 1, "n_query": 2, "class_identity": "random"}))
    assert build_task_source(cfg, "train").sample(2).query_y.shape == (2, 6)
    with pytest.raises(ConfigError, match="dataset"):
        resolve_config(_cfg({"name": "medmnist", "k_shot": 1, "n_query": 1}))
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'shots'"):
        resolve_config(_cfg({"name": "mednist", "shots": 1}))
    cfg = resolve_config(_cfg({"name": "medmnist", "dataset": "breastmnist", "k_shot": 5, "n_query": 30}))
    with pytest.raises(DataError, match=r"class 'malignant' \(label 0\) of split 'breastmnist/val' has 21 examples"):
        build_task_source(cfg, "val")


def test_user_npz_and_image_folder_families(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    arrays = {}
    for s in ("train", "val", "test"):
        arrays[f"{s}_images"] = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
        arrays[f"{s}_labels"] = (np.arange(20) % 2)[:, None]
    np.savez(tmp_path / "mine.npz", **arrays)
    cfg = resolve_config(_cfg({"name": "npz", "path": str(tmp_path / "mine.npz"), "k_shot": 2, "n_query": 3}))
    assert build_task_source(cfg, "test").sample(1).query_y.shape == (1, 6)
    for s in ("train", "val", "test"):
        for c in ("a", "b"):
            (tmp_path / "imgs" / s / c).mkdir(parents=True)
            for i in range(6):
                Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(tmp_path / "imgs" / s / c / f"{i}.png")
    cfg = resolve_config(_cfg({"name": "image_folder", "path": str(tmp_path / "imgs"), "k_shot": 2, "n_query": 3}))
    src = build_task_source(cfg, "test")
    assert src.support.class_names == ("a", "b") and src.support.source == "test"
    b = src.sample(1, torch.Generator().manual_seed(0))
    assert b.support_x.shape == (1, 4, 1, 28, 28)
