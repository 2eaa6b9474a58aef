"""Semi-supervised consistency (``train.semi``): the EMA teacher, the ramp-up, FixMatch's confidence mask,
the unlabeled crops, and training with it: the same steps, the label state untouched."""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from activeseg.core.config import ConfigError, load_config
from activeseg.core.labels import LabelState
from activeseg.core.partition import Region
from activeseg.loop.oracle import reveal_from_ground_truth
from activeseg.model.crops import crop_window
from activeseg.model.inference import to_tensor
from activeseg.model.semi import (UnlabeledCrops, ema_update, fixmatch_consistency, fixmatch_targets, flip_where,
                                  mean_teacher_consistency, rampup)
from activeseg.model.training import train_model

from tests.conftest import TINY


def test_the_teacher_is_the_exponential_moving_average_of_the_student():
    student, teacher = (nn.Sequential(nn.Linear(2, 1), nn.BatchNorm1d(1)) for _ in range(2))
    for p in student.parameters():
        nn.init.constant_(p, 3.0)
    for p in teacher.parameters():
        nn.init.constant_(p, 1.0)
    student[1].running_mean.fill_(7.0)
    ema_update(teacher, student, 0.75)  # 0.75 x 1 + 0.25 x 3
    assert all(torch.equal(p, torch.full_like(p, 1.5)) for p in teacher.parameters())
    ema_update(teacher, student, 0.75)  # 0.75 x 1.5 + 0.25 x 3
    assert all(torch.equal(p, torch.full_like(p, 1.875)) for p in teacher.parameters())
    assert teacher[1].running_mean.item() == 7.0 and all(torch.equal(p, torch.full_like(p, 3.0))
                                                          for p in student.parameters())


def test_the_ramp_up_rises_from_exp_minus_5_to_1():
    assert rampup(0, 100) == pytest.approx(math.exp(-5))  # 0.0067
    assert rampup(50, 100) == pytest.approx(math.exp(-1.25))  # 0.2865
    assert rampup(100, 100) == rampup(250, 100) == rampup(0, 0) == 1.0


def test_fixmatch_counts_only_pixels_at_or_above_the_threshold():
    # one crop of 1 x 4 pixels, 2 classes; P(class 1) = 0.97, 0.5, 0.05, 0.95
    p1 = torch.tensor([0.97, 0.5, 0.05, 0.95])
    weak = torch.stack([1 - p1, p1])[None, :, None, :]  # (1, 2, 1, 4)
    target, confident = fixmatch_targets(weak, 0.95)
    assert target.tolist() == [[[1, 0, 0, 1]]] and confident.tolist() == [[[True, False, True, True]]]
    # strong logits 0: cross entropy ln 2 on each confident pixel; divided by every valid pixel
    strong = torch.zeros(1, 2, 1, 4)
    everywhere = torch.ones(1, 1, 4, dtype=torch.bool)
    assert fixmatch_consistency(strong, weak, everywhere, 0.95).item() == pytest.approx(3 * math.log(2) / 4)
    first_two = torch.tensor([[[True, True, False, False]]])  # pixel 0 counts, pixel 1 is unconfident
    assert fixmatch_consistency(strong, weak, first_two, 0.95).item() == pytest.approx(math.log(2) / 2)
    # a confident, right prediction costs (almost) nothing
    right = torch.stack([torch.zeros(4), 20 * torch.ones(4)])[None, :, None, :]
    assert fixmatch_consistency(right[..., [0]], weak[..., [0]], everywhere[..., [0]], 0.95).item() < 1e-6


def test_mean_teacher_consistency_is_the_squared_probability_difference_on_valid_pixels():
    student = torch.zeros(1, 2, 1, 2)  # p = (0.5, 0.5)
    teacher = torch.tensor([[1.0, 0.75], [0.0, 0.25]])[None, :, None, :]
    # per pixel, mean over classes of (p - q)^2: 0.25 and 0.0625
    assert mean_teacher_consistency(student, teacher, torch.ones(1, 1, 2, dtype=torch.bool)).item() == 0.15625
    assert mean_teacher_consistency(student, teacher, torch.tensor([[[False, True]]])).item() == 0.0625


def test_flips_undo_themselves_and_touch_only_the_chosen_samples():
    x = torch.arange(12.0).view(2, 1, 2, 3)
    flipped = flip_where(x, torch.tensor([True, False]))
    assert flipped[0, 0, 0].tolist() == [2.0, 1.0, 0.0] and torch.equal(flipped[1], x[1])
    assert torch.equal(flip_where(flipped, torch.tensor([True, False])), x)


def test_unlabeled_crops_are_centred_on_pixels_not_revealed(tiny_dataset):
    stem = tiny_dataset.stems[0]
    state = LabelState.empty({stem: (64, 64)})
    reveal_from_ground_truth(state, tiny_dataset, [Region(stem, 0, 0, 64, 48)], 0)  # only x >= 48 is unrevealed
    crops = UnlabeledCrops.of(state, tiny_dataset, 32)
    assert len(crops.pool) == 64 * 16
    rng = np.random.default_rng(0)
    assert all(x >= 48 for _, _, x in (crops.pool.draw(rng) for _ in range(200)))
    images, valid = crops.batch(3, rng)
    assert images.shape == (3, 3, 32, 32) and valid.shape == (3, 32, 32) and valid.all()
    centre = crops.pool.draw(np.random.default_rng(1))  # the crop is the window around the drawn centre
    window = crop_window((64, 64), centre, 32)
    assert torch.equal(crops.batch(1, np.random.default_rng(1))[0][0], to_tensor(tiny_dataset.region_pixels(window)))
    # a crop larger than the image: only the image's own pixels are valid, not the mirror padding
    _, valid = UnlabeledCrops.of(state, tiny_dataset, 80).batch(2, rng)
    assert valid[:, :64, :64].all() and valid.sum() == 2 * 64 * 64


def label_state(dataset, images: int, side: int) -> LabelState:
    stems = dataset.stems[:images]
    state = LabelState.empty({s: (64, 64) for s in stems})
    reveal_from_ground_truth(state, dataset, [Region(s, 0, 0, side, side) for s in stems], 0)
    return state


@pytest.mark.parametrize("method", ["mean_teacher", "fixmatch"])
def test_semi_supervised_training_runs_the_same_steps_and_leaves_the_labels_alone(method, tiny_dataset, tmp_path):
    plain = load_config(None, [*TINY, "train.patience=0"])
    semi = load_config(None, [*TINY, "train.patience=0", f"train.semi.method={method}", "train.semi.rampup_steps=0",
                              "train.semi.threshold=0.5"])
    state = label_state(tiny_dataset, 3, 32)
    before = copy.deepcopy(state)
    a = train_model(plain, tiny_dataset, state, tiny_dataset.stems[8:], tmp_path / "a", seed=1, progress=False)
    b = train_model(semi, tiny_dataset, state, tiny_dataset.stems[8:], tmp_path / "b", seed=1, progress=False)
    # 3 x 32^2 labeled pixels: clamp(ceil(240 x 3072 / (4 x 32^2)), 4, 8) = 8 steps, in epochs of 4
    assert (a.train_steps, [h["steps"] for h in a.history]) == (b.train_steps, [h["steps"] for h in b.history]) \
        == (8, [4, 4])
    assert [h["loss"] for h in a.history] != [h["loss"] for h in b.history]  # the consistency term acts
    for stem in state.shapes:
        for layer in ("known", "labels", "pseudo", "pseudo_known"):
            assert np.array_equal(getattr(state, layer)[stem], getattr(before, layer)[stem]), layer
    assert (state.history, state.pseudo_regions) == (before.history, before.pseudo_regions)


def test_semi_settings_are_checked():
    with pytest.raises(ConfigError, match=r"train.semi.method: expected one of \['none', 'mean_teacher', 'fixmatch'\]"):
        load_config(None, [*TINY, "train.semi.method=pseudo"])
    with pytest.raises(ConfigError, match="semi.method fixmatch trains in one process only for now"):
        load_config(None, [*TINY, "train.semi.method=fixmatch", "train.devices=2"])
    assert load_config(None, list(TINY)).train.semi.method == "none"
