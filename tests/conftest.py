"""Shared fixtures: a tiny synthetic dataset and a tiny, fast configuration."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from activeseg.core.config import Config, load_config
from activeseg.core.data import Dataset, load_dataset
from activeseg.core.synthetic import synthesize

torch.set_num_threads(1)  # tests run two workers on two cores

SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"

TINY = [
    "rounds=3",
    "data.synthetic.n=10",
    "data.synthetic.size=64",
    "partition.side=32",
    "partition.initial_labeled=3",
    "model.width=4",
    "model.depth=2",
    "train.epochs=2",
    "train.samples_per_epoch=16",
    "train.batch_size=4",
    "train.crop=32",
    "query.mc_passes=3",
    "tracking.mlflow=false",
]


@pytest.fixture
def tiny_cfg() -> Config:
    return load_config(None, list(TINY))


@pytest.fixture
def tiny_data_dir(tmp_path: Path) -> Path:
    return synthesize(tmp_path / "data", n=10, size=64, seed=0)


@pytest.fixture
def tiny_dataset(tiny_data_dir: Path) -> Dataset:
    return load_dataset(tiny_data_dir, classes=2)
