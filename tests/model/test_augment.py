"""Augmentation of training crops (activeseg.model.augment): masks stay aligned with images, strength 0 is
the identity, draws are seeded, presets resolve as documented."""

import math

import numpy as np
import pytest
import torch
from skimage.color import hed2rgb, rgb2hed

from activeseg.core.config import AUGMENT_PRESETS, AugmentConfig
from activeseg.core.labels import LabelState
from activeseg.core.partition import Region
from activeseg.loop.oracle import reveal_from_ground_truth
from activeseg.model.augment import (GEOMETRIC, INTENSITY, Draws, augment_batch, draw, hed_to_rgb, resolve,
                                     rgb_to_hed, stain)
from activeseg.model.crops import CropCentres, make_batch

OFF = AUGMENT_PRESETS["none"]


def blocks(n: int = 4, side: int = 32, cell: int = 4, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Images whose every channel is their mask (random 0/1 cells of cell x cell pixels): image (n, 3, side,
    side), target (n, side, side) int64, weight ones."""
    gen = torch.Generator().manual_seed(seed)
    cells = torch.randint(0, 2, (n, side // cell, side // cell), generator=gen)
    target = cells.repeat_interleave(cell, 1).repeat_interleave(cell, 2)
    return target[:, None].float().expand(n, 3, side, side).contiguous(), target, torch.ones(n, side, side)


def hand_draws(n: int = 1, side: int = 8, **values: float) -> Draws:
    """Draws of ``n`` samples, all zero (scales 1) but ``values`` (one number for every sample)."""
    d = draw(OFF, n, 3, side, torch.Generator().manual_seed(0))
    for name, value in values.items():
        setattr(d, name, torch.full_like(getattr(d, name), value))
    return d


@pytest.mark.parametrize("strengths", [{"scale": 0.3}, {"rotation": 45.0}, {"elastic": 3.0},
                                       {"scale": 0.3, "rotation": 45.0, "elastic": 3.0}])
def test_geometric_transforms_keep_the_mask_aligned_with_the_image(strengths):
    x, y, w = blocks()
    s = {**OFF, **strengths}
    ax, ay, aw = augment_batch(x, y, w, s, draw(s, 4, 3, 32, torch.Generator().manual_seed(1)))
    assert not torch.equal(ay, y)  # something moved
    # where the image is not interpolated across a cell border, its value is the mask's
    settled = (aw > 0) & ((ax[:, 0] - ax[:, 0].round()).abs() < 1e-4)
    assert settled.float().mean() > 0.5
    assert torch.equal(ay[settled], ax[:, 0].round().long()[settled])
    assert set(aw.unique().tolist()) <= {0.0, 1.0}


def test_a_quarter_turn_turns_image_target_and_weight_alike():
    x, y, w = blocks(n=1, side=8, cell=2)
    ax, ay, aw = augment_batch(x, y, w, {**OFF, "rotation": 90.0}, hand_draws(angle=90.0))
    turned = torch.rot90(y, 1, (1, 2))
    assert torch.equal(ay, turned) and torch.equal(aw, w)
    assert torch.allclose(ax[:, 0], turned.float(), atol=1e-5)


def test_pixels_moved_in_from_outside_the_crop_get_weight_0():
    # zoom out by 2 on an 8 x 8 crop: the central 4 x 4 comes from inside, the border ring from outside
    x, y, w = blocks(n=1, side=8, cell=2)
    _, _, aw = augment_batch(x, y, w, {**OFF, "scale": 1.0}, hand_draws(zoom=-math.log(2)))
    expected = torch.zeros(1, 8, 8)
    expected[:, 2:6, 2:6] = 1
    assert torch.equal(aw, expected)


@pytest.mark.parametrize("name", INTENSITY)
def test_intensity_transforms_change_only_the_image_and_are_off_at_strength_0(name):
    gen = torch.Generator().manual_seed(2)
    x, y = torch.rand(2, 3, 16, 16, generator=gen), torch.randint(0, 3, (2, 16, 16), generator=gen)
    w = torch.rand(2, 16, 16, generator=gen)
    s = {**OFF, name: 0.5}
    d = draw(s, 2, 3, 16, gen)
    ax, ay, aw = augment_batch(x, y, w, s, d)
    assert not torch.equal(ax, x) and ax.min() >= 0 and ax.max() <= 1
    assert torch.equal(ay, y) and torch.equal(aw, w)
    zero = augment_batch(x, y, w, {**OFF, name: 0.0}, d)
    assert all(torch.equal(a, b) for a, b in zip(zero, (x, y, w)))


def test_brightness_and_contrast_by_hand():
    x = torch.tensor([0.2, 0.4, 0.6, 0.8]).reshape(1, 1, 2, 2)
    y, w = torch.zeros(1, 2, 2, dtype=torch.int64), torch.ones(1, 2, 2)
    brighter, _, _ = augment_batch(x, y, w, {**OFF, "brightness": 0.1}, hand_draws(side=2, brightness=0.1))
    assert torch.allclose(brighter.flatten(), torch.tensor([0.3, 0.5, 0.7, 0.9]))
    # contrast x 1.5 about the mean 0.5
    sharper, _, _ = augment_batch(x, y, w, {**OFF, "contrast": 0.5}, hand_draws(side=2, contrast=0.5))
    assert torch.allclose(sharper.flatten(), torch.tensor([0.05, 0.35, 0.65, 0.95]))


def test_hed_matches_scikit_image_and_stain_strength_0_is_the_identity():
    # colours made of positive stain densities, where skimage's rgb2hed clamps nothing
    hed = np.random.default_rng(0).uniform(0, 0.1, (2, 5, 5, 3))
    rgb = hed2rgb(hed)
    ours = rgb_to_hed(torch.from_numpy(rgb).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    assert np.allclose(ours, rgb2hed(rgb), atol=1e-12)
    assert np.allclose(hed_to_rgb(torch.from_numpy(hed).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy(), rgb,
                       atol=1e-12)
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(stain(x, torch.ones(2, 3), torch.zeros(2, 3)), x, atol=1e-5)  # any colour comes back
    d = draw({**OFF, "stain": 0.2}, 2, 3, 8, torch.Generator().manual_seed(4))
    assert torch.equal(augment_batch(x, torch.zeros(2, 8, 8, dtype=torch.int64), torch.ones(2, 8, 8),
                                     {**OFF, "stain": 0.0}, d)[0], x)


def test_stain_is_refused_on_grey_images():
    x = torch.rand(1, 1, 8, 8)
    s = {**OFF, "stain": 0.1}
    with pytest.raises(ValueError, match="train.augment.stain needs RGB"):
        augment_batch(x, torch.zeros(1, 8, 8, dtype=torch.int64), torch.ones(1, 8, 8), s, hand_draws())


def test_draws_are_seeded():
    s = AUGMENT_PRESETS["histology"]
    x, y, w = blocks()
    first, again, other = (augment_batch(x, y, w, s, draw(s, 4, 3, 32, torch.Generator().manual_seed(seed)))
                           for seed in (5, 5, 6))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])


def labeled(dataset) -> LabelState:
    stems = dataset.stems[:3]
    state = LabelState.empty({s: (64, 64) for s in stems})
    reveal_from_ground_truth(state, dataset, [Region(s, 0, 0, 32, 32) for s in stems], 0)
    return state


def test_training_batches_preset_none_is_todays_and_shares_augment_as_one_process(tiny_cfg, tiny_dataset):
    state = labeled(tiny_dataset)
    centres = CropCentres.of(state, 0.0)
    rng_today, rng = np.random.default_rng(7), np.random.default_rng(7)
    today = make_batch(state, tiny_dataset, centres, tiny_cfg, rng_today)
    off = make_batch(state, tiny_dataset, centres, tiny_cfg, rng, strengths=resolve(AugmentConfig(), tiny_dataset))
    assert all(torch.equal(a, b) for a, b in zip(today, off))
    assert rng.random() == rng_today.random()  # no draw more
    s = AUGMENT_PRESETS["histology"]
    whole = make_batch(state, tiny_dataset, centres, tiny_cfg, np.random.default_rng(7), strengths=s)
    assert not torch.equal(whole[0], today[0])
    assert all(torch.equal(a, b) for a, b in zip(whole, make_batch(state, tiny_dataset, centres, tiny_cfg,
                                                                     np.random.default_rng(7), strengths=s)))
    shares = [make_batch(state, tiny_dataset, centres, tiny_cfg, np.random.default_rng(7), range(r * 2, r * 2 + 2), s)
              for r in range(2)]
    for part, full in zip(zip(*shares), whole):
        assert torch.equal(torch.cat(part), full)


def test_presets_fill_strengths_and_explicit_ones_override(tiny_dataset):
    assert AugmentConfig().preset == "none" and AugmentConfig().strengths("none") == OFF
    settings = AugmentConfig(preset="histology", stain=0.2, rotation=0)
    assert settings.strengths("histology") == {**AUGMENT_PRESETS["histology"], "stain": 0.2, "rotation": 0}
    assert set(OFF) == set(GEOMETRIC) | set(INTENSITY)
    # the synthetic data: 9 of 10 images bright-field RGB, 1 darkfield
    assert resolve(AugmentConfig(preset="auto", noise=0.0), tiny_dataset) == {**AUGMENT_PRESETS["histology"],
                                                                              "noise": 0.0}
