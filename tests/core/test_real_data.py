"""One test on the real EM data of ../shared/datasets/isbi2012-em (absent on a user's fresh machine)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from activeseg.core.data import load_dataset
from activeseg.model.inference import mc_dropout_scores
from activeseg.core.labels import LabelState
from activeseg.model.network import EDConvNet
from activeseg.loop.oracle import reveal_from_ground_truth
from activeseg.core.partition import partition_image
from activeseg.model.training import train_model
from tests.conftest import SHARED_DATASETS

ISBI = SHARED_DATASETS / "isbi2012-em"


@pytest.mark.skipif(not (ISBI / "images").is_dir(), reason=f"dataset folder {ISBI} is absent")
def test_isbi2012_loads_partitions_trains_and_scores(tiny_cfg, tmp_path):
    dataset = load_dataset(ISBI, classes=2)
    assert len(dataset.stems) == 30 and dataset.channels == 1
    assert {(s.height, s.width) for s in dataset.samples.values()} == {(512, 512)}
    assert set(np.unique(dataset.mask(dataset.stems[0]))) == {0, 1}
    patches = partition_image(dataset.stems[0], 512, 512, 128, 0.5)
    assert len(patches) == 49
    state = LabelState.empty({s: (512, 512) for s in dataset.stems[:2]})
    reveal_from_ground_truth(state, dataset, patches[:3], 0)
    result = train_model(tiny_cfg, dataset, state, dataset.stems[2:3], tmp_path, progress=False)
    assert result.train_steps == tiny_cfg.train.max_steps and len(result.history) == 2
    assert all(np.isfinite(h["loss"]) and 0 <= h["val_dice"] <= 1 for h in result.history)
    scores = mc_dropout_scores(EDConvNet(1, 2, 4, 2), dataset, patches[:8], 2, 4, torch.device("cpu"))
    assert scores.descriptors.shape == (8, 16) and np.isfinite(scores.entropy).all()
