"""Tiled prediction (activeseg.model.prediction): the window, the tile grid, the whole-image statistics, and
the tiled mask against whole-image inference on an image of 645 x 770 px."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F

from activeseg.core.data import DatasetError, to_unit, unit_range
from activeseg.metrics import dice
from activeseg.model.inference import pad_to_multiple, predict_probs
from activeseg.model.network import EDConvNet, build_model, standardize
from activeseg.model.prediction import (UNCERTAINTY_SCALE, Tiling, channel_stats, normalized_entropy, padded_index,
                                        predict_folder, predict_image, ramp, tile_starts)

CPU = torch.device("cpu")


def test_ramp_rises_and_falls_over_the_overlap_and_two_tiles_sum_to_one():
    assert np.allclose(ramp(6, 2, True, True), [1 / 3, 2 / 3, 1, 1, 2 / 3, 1 / 3])
    assert np.array_equal(ramp(4, 2, False, False), np.ones(4))
    assert np.allclose(ramp(4, 3, False, True), [1, 0.75, 0.5, 0.25])
    # tiles [0, 8) and [5, 13) overlap by 3 px: their weights over [5, 8) sum to 1
    first, second = ramp(8, 3, False, True), ramp(8, 3, True, False)
    assert np.allclose(first[5:] + second[:3], 1)


def test_tile_starts_step_by_the_stride_and_the_last_tile_ends_at_the_edge():
    assert tile_starts(1024, 512, 384) == [0, 384, 512]
    assert tile_starts(512, 512, 384) == [0]
    assert tile_starts(904, 256, 160) == [0, 160, 320, 480, 640, 648]


def test_padded_index_reflects_or_replicates_past_the_end():
    assert padded_index(5, 8, True).tolist() == [0, 1, 2, 3, 4, 3, 2, 1]
    assert padded_index(5, 8, False).tolist() == [0, 1, 2, 3, 4, 4, 4, 4]


def test_channel_stats_are_those_standardize_takes_in_whole_image_inference():
    rng = np.random.default_rng(1)
    pixels = (rng.random((37, 23, 3)) * 200).astype(np.uint8)
    pixels[..., 2] = 7  # a flat channel: the standard deviation is floored
    lo, hi = unit_range(pixels)
    mean, std = channel_stats(pixels, lo, hi, padded_index(37, 40, True), padded_index(23, 24, True), chunk=5)
    x = pad_to_multiple(torch.from_numpy(to_unit(pixels, lo, hi).transpose(2, 0, 1))[None], 8)
    got = (x - torch.from_numpy(mean).view(1, 3, 1, 1)) / torch.from_numpy(std).view(1, 3, 1, 1)
    assert x.shape[-2:] == (40, 24) and std[2] == pytest.approx(0.05)
    assert torch.allclose(got, standardize(x), atol=1e-5)


def test_normalized_entropy_is_zero_when_certain_and_full_scale_when_uniform():
    probs = np.array([[[1.0, 0.5, 0.9]], [[0.0, 0.5, 0.1]]], np.float32)  # (C=2, 1, 3)
    h = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1)) / math.log(2)
    assert normalized_entropy(probs).tolist() == [[0, UNCERTAINTY_SCALE, round(h * UNCERTAINTY_SCALE)]]


def blobs(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 bright discs on a noisy, slowly varying background, and their (H, W) mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    mask = np.zeros((height, width), bool)
    for _ in range(40):
        cy, cx, r = rng.integers(0, height), rng.integers(0, width), rng.integers(8, 40)
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    image = 60 + 30 * np.sin(xx / 90) + 110 * mask + rng.normal(0, 12, (height, width))
    return np.repeat(np.clip(image, 0, 255).astype(np.uint8)[..., None], 3, axis=2), mask


def fitted(pixels: np.ndarray, mask: np.ndarray, steps: int = 30, crop: int = 128) -> EDConvNet:
    """A depth-3, width-4 net fitted for ``steps`` Adam steps on random crops of one image: an untrained net
    is undecided (logit differences of 1e-3) and its mask flips with float rounding."""
    torch.manual_seed(0)
    model = build_model(3, 2, 4, 3, 0.2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    x = torch.from_numpy(to_unit(pixels, *unit_range(pixels)).transpose(2, 0, 1))[None]
    y = torch.from_numpy(mask.astype(np.int64))[None]
    rng = np.random.default_rng(0)
    for _ in range(steps):
        cy, cx = rng.integers(0, pixels.shape[0] - crop), rng.integers(0, pixels.shape[1] - crop)
        window = (..., slice(cy, cy + crop), slice(cx, cx + crop))
        loss = F.cross_entropy(model(x[window]), y[window])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def covered_once(size: int, tile: int, overlap: int) -> np.ndarray:
    """(size,) True where one tile only covers the pixel along this axis (``size`` a multiple of 8)."""
    count = np.zeros(size, int)
    for start in tile_starts(size, tile, tile - overlap):
        count[start:start + tile] += 1
    return count == 1


def test_tiled_prediction_equals_whole_image_inference_away_from_the_seams():
    """645 x 770 px (padded to 648 x 776), tiles of 256 overlapping by 96 px, depth 3 (receptive radius about
    65 px < 96): a pixel covered by one tile is at least 96 px from its inner edges, so its class is the
    whole image's (exactly, but for ties within float rounding); the overlap bands blend tiles whose zero
    padding reaches them, so there only Dice >= 0.999 is required."""
    pixels, truth = blobs(645, 770)
    model = fitted(pixels, truth)
    whole = predict_probs(model, to_unit(pixels, *unit_range(pixels)), CPU)
    tiled = predict_image(model, pixels, CPU, Tiling(256, 96)).mask
    expected = whole.argmax(0)
    assert dice(expected == 1, truth) > 0.8  # a model that sees the discs: the comparison means something
    assert dice(tiled == 1, expected == 1) >= 0.999
    single = np.outer(covered_once(648, 256, 96), covered_once(776, 256, 96))[:645, :770]
    decided = np.abs(whole[1] - whole[0]) > 1e-4
    assert single.mean() > 0.15 and np.array_equal(tiled[single & decided], expected[single & decided])


def test_uncertainty_maps_come_with_the_mask_and_do_not_change_it():
    torch.manual_seed(0)
    model = build_model(1, 3, 4, 2, 0.5).eval()
    pixels = blobs(100, 90)[0][..., :1]
    plain = predict_image(model, pixels, CPU, Tiling(48, 16))
    torch.manual_seed(1)
    with_maps = predict_image(model, pixels, CPU, Tiling(48, 16), passes=4)
    assert plain.uncertainty is None and np.array_equal(plain.mask, with_maps.mask)
    u = with_maps.uncertainty
    assert u.shape == (100, 90) and u.dtype == np.uint16 and 0 < u.mean() < UNCERTAINTY_SCALE
    assert int(plain.mask.max()) < 3


def test_a_tiling_off_the_pooling_grid_is_refused():
    model = build_model(1, 2, 4, 2, 0.2)
    with pytest.raises(ValueError, match="multiples of 4"):
        predict_image(model, np.zeros((40, 40, 1), np.uint8), CPU, Tiling(30, 8))


def test_predict_folder_names_the_empty_folder_and_the_bad_file(tmp_path: Path):
    model = build_model(1, 2, 4, 2, 0.2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty: no image to predict"):
        list(predict_folder(model, tmp_path / "empty", tmp_path / "out", CPU))
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(images / "a.png")
    (images / "b.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"b\.png: unreadable image"):
        list(predict_folder(model, images, tmp_path / "out", CPU))
    assert (tmp_path / "out" / "a.png").is_file()
    (images / "b.png").unlink()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(images / "c.png")
    with pytest.raises(DatasetError, match=r"c\.png: 3 channel\(s\), the model takes 1"):
        list(predict_folder(model, images, tmp_path / "out", CPU))
