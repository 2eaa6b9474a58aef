"""Tiled prediction of images of any size: class-id masks and, optionally, MC-dropout uncertainty maps.

An image is cut into ``tile`` x ``tile`` tiles overlapping by at least ``overlap`` px; each tile's class
probabilities are weighted by a window (:func:`ramp`: linear over the overlap towards a neighbouring
tile, 1 elsewhere and at the image's edges) and added into a strip of accumulators one tile high; once
a row of tiles is done, the rows no later tile touches are divided by their summed weight, turned into
class ids (and uncertainty) and written into the output. Peak memory is the image's stored pixels, the
outputs and O(tile x image width) of accumulators, plus one tile's activations, whatever the image size.

Decided here (no paper covers it), so that a tiled prediction equals whole-image inference
(:func:`activeseg.model.inference.predict_probs`) away from the seams:
- the tiles are standardized with the whole image's per-channel mean and standard deviation
  (:func:`channel_stats`), not their own, as whole-image inference standardizes the whole image
  (padded as it pads it, so the statistics are the same);
- tile starts are multiples of ``2**depth``, so the pooling grids of tile and image coincide, and the
  image is padded at the bottom and right as whole-image inference pads it (reflection to a multiple of
  ``2**depth``). A pixel covered by a single tile lies at least ``overlap`` px from that tile's inner
  edges; with ``overlap`` at least the network's receptive radius (about 65 px for depth 3) its logits
  are computed from the same inputs as in the whole image, so they agree up to float rounding. Only in
  the overlap bands, where the tiles' zero padding reaches the pixel, do the blended values differ.

Uncertainty (``passes`` > 0): the predictive entropy H(mean_t p_t) of T MC-dropout decoder passes (the
``entropy`` score of :mod:`activeseg.model.inference`), over the blended mean probabilities, divided by
ln(classes) so it lies in [0, 1], stored as 16-bit PNG: pixel = round(value x 65535). The mask is the
deterministic prediction (dropout off), as whole-image inference gives it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from activeseg.core.data import IMAGE_EXTENSIONS, DatasetError, read_pixels, to_unit, unit_range
from activeseg.core.util import write_json
from activeseg.model.inference import EPS, pad_to_multiple, to_tensor
from activeseg.model.network import STD_FLOOR, EDConvNet, mc_mode

UNCERTAINTY_SCALE = 65535
"""A 16-bit uncertainty pixel is round(H(mean_t p_t) / ln(classes) x UNCERTAINTY_SCALE)."""


@dataclass(frozen=True)
class Tiling:
    """Tile side and least overlap of neighbouring tiles (px); both multiples of ``2**depth``."""

    tile: int = 512
    overlap: int = 128

    def check(self, multiple: int) -> None:
        if self.tile % multiple or self.overlap % multiple or not 0 <= self.overlap < self.tile:
            raise ValueError(f"tiling: tile {self.tile} and overlap {self.overlap} must be multiples of "
                             f"{multiple} (2**model depth) with 0 <= overlap < tile")


@dataclass(frozen=True)
class Prediction:
    """``mask`` (H, W) uint8 class ids; ``uncertainty`` (H, W) uint16 (module docstring) or None."""

    mask: np.ndarray
    uncertainty: np.ndarray | None


def tile_starts(size: int, tile: int, stride: int) -> list[int]:
    """Starts of the tiles along an axis of ``size`` px (``tile`` <= ``size``): every ``stride`` px, and a
    last one ending at ``size``. With ``size``, ``tile`` and ``stride`` multiples of 2**depth so is every start."""
    return [*range(0, size - tile, stride), size - tile]


def ramp(length: int, overlap: int, before: bool, after: bool) -> np.ndarray:
    """(length,) blending weights along one axis of a tile: rising as (i + 1) / (overlap + 1) over the
    first ``overlap`` px when another tile lies ``before``, falling likewise over the last ones when one
    lies ``after``, 1 elsewhere. Two tiles overlapping by exactly ``overlap`` px sum to 1 there."""
    i = np.arange(length, dtype=np.float32)
    weights = np.ones(length, np.float32)
    if before:
        weights = np.minimum(weights, (i + 1) / (overlap + 1))
    if after:
        weights = np.minimum(weights, (length - i) / (overlap + 1))
    return weights


def padded_index(size: int, padded: int, reflect: bool) -> np.ndarray:
    """(padded,) the source pixel of each position along an axis of ``size`` px padded at the end to
    ``padded`` as :func:`activeseg.model.inference.pad_to_multiple` pads: by reflection, or replication."""
    i = np.arange(padded)
    return np.where(i < size, i, 2 * (size - 1) - i if reflect else size - 1)


def channel_stats(pixels: np.ndarray, lo: float, hi: float, rows: np.ndarray, columns: np.ndarray,
                  chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation (C,) that :func:`activeseg.model.network.standardize`
    computes in whole-image inference: over the (H, W, C) image mapped to [0, 1] by ``lo`` and ``hi`` and
    padded (:func:`padded_index` ``rows`` and ``columns``), unbiased, floored at STD_FLOOR. Summed in
    float64 over ``chunk``-row pieces, so no float copy of the image is made."""
    total = np.zeros(pixels.shape[2])
    squares = np.zeros(pixels.shape[2])
    for start in range(0, len(rows), chunk):
        piece = to_unit(pixels[rows[start:start + chunk]][:, columns], lo, hi).astype(np.float64)
        total += piece.sum(axis=(0, 1))
        squares += (piece * piece).sum(axis=(0, 1))
    n = len(rows) * len(columns)
    mean = total / n
    var = np.maximum(squares - n * mean * mean, 0) / max(n - 1, 1)
    return mean.astype(np.float32), np.maximum(np.sqrt(var), STD_FLOOR).astype(np.float32)


class Strip:
    """Weighted sums of probabilities (C, tile, width) over one row of tiles, and their weights (tile, width)."""

    def __init__(self, classes: int, height: int, width: int, uncertainty: bool):
        self.probs = np.zeros((classes, height, width), np.float32)
        self.mc = np.zeros_like(self.probs) if uncertainty else None
        self.weight = np.zeros((height, width), np.float32)

    def add(self, x: int, weight: np.ndarray, probs: np.ndarray, mc: np.ndarray | None) -> None:
        """Add a tile's (C, h, w) probabilities (and MC mean) weighted by ``weight`` (h, w) at column ``x``."""
        h, w = weight.shape
        self.probs[:, :h, x:x + w] += probs * weight
        if self.mc is not None:
            self.mc[:, :h, x:x + w] += mc * weight
        self.weight[:h, x:x + w] += weight

    def pop(self, rows: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The first ``rows`` rows' blended probabilities (C, rows, width) and MC means (or None); the
        remaining rows move up and zeros fill in below."""
        done = self.weight[:rows]
        out = [None if a is None else a[:, :rows] / done for a in (self.probs, self.mc)]
        for array in (self.probs, self.mc, self.weight):
            if array is not None:
                array[..., :-rows, :] = array[..., rows:, :].copy()
                array[..., -rows:, :] = 0
        return out[0], out[1]


def normalized_entropy(probs: np.ndarray) -> np.ndarray:
    """(C, H, W) probabilities -> (H, W) uint16: H(p) / ln(C) x UNCERTAINTY_SCALE, rounded."""
    entropy = -(probs * np.log(probs + EPS)).sum(axis=0) / math.log(probs.shape[0])
    return np.rint(np.clip(entropy, 0, 1) * UNCERTAINTY_SCALE).astype(np.uint16)


@torch.no_grad()
def tile_probs(model: EDConvNet, tile: np.ndarray, stats: tuple[torch.Tensor, torch.Tensor], passes: int,
               device: torch.device) -> tuple[np.ndarray, np.ndarray | None]:
    """A (h, w, C_in) tile in [0, 1], reflect-padded to multiples of 2**depth: the deterministic class
    probabilities (C, h', w') and, with ``passes`` > 0, the mean of that many MC-dropout passes (or None)."""
    x = pad_to_multiple(to_tensor(tile)[None].to(device), 2**model.depth)
    model.eval()
    features = model.encode(x, stats)
    probs = torch.softmax(model.decode(features).float(), dim=1)[0].cpu().numpy()
    if not passes:
        return probs, None
    mc_mode(model)
    mc = sum(torch.softmax(model.decode(features).float(), dim=1)[0] for _ in range(passes)) / passes
    model.eval()
    return probs, mc.cpu().numpy()


def predict_image(model: EDConvNet, pixels: np.ndarray, device: torch.device, tiling: Tiling = Tiling(),
                  passes: int = 0, progress: bool = False, name: str = "") -> Prediction:
    """Tiled prediction of an (H, W, C_in) image as stored (:func:`activeseg.core.data.read_pixels`); see
    the module docstring. ``progress``: a tqdm bar over the tiles, labelled ``name``."""
    from tqdm import tqdm

    multiple = 2**model.depth
    tiling.check(multiple)
    h, w = pixels.shape[:2]
    padded_h, padded_w = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    reflect = padded_h - h < h and padded_w - w < w
    lo, hi = unit_range(pixels)
    stats = tuple(torch.from_numpy(s).view(1, -1, 1, 1).to(device) for s in channel_stats(
        pixels, lo, hi, padded_index(h, padded_h, reflect), padded_index(w, padded_w, reflect)))
    tile_h, tile_w = min(tiling.tile, padded_h), min(tiling.tile, padded_w)
    stride = tiling.tile - tiling.overlap
    ys, xs = tile_starts(padded_h, tile_h, stride), tile_starts(padded_w, tile_w, stride)
    mask = np.empty((h, w), np.uint8)
    uncertainty = np.empty((h, w), np.uint16) if passes else None
    strip = Strip(model.head.out_channels, tile_h, padded_w, uncertainty=bool(passes))
    bar = tqdm(total=len(ys) * len(xs), desc=name, unit="tile", disable=not progress, leave=False)
    for k, y in enumerate(ys):
        for j, x in enumerate(xs):
            weight = np.outer(ramp(tile_h, tiling.overlap, k > 0, k < len(ys) - 1),
                              ramp(tile_w, tiling.overlap, j > 0, j < len(xs) - 1))
            probs, mc = tile_probs(model, to_unit(pixels[y:y + tile_h, x:x + tile_w], lo, hi), stats, passes, device)
            strip.add(x, weight, probs, mc)
            bar.update()
        end = min(ys[k + 1] if k + 1 < len(ys) else padded_h, h)
        probs, mc = strip.pop(end - y)
        mask[y:end] = probs[:, :, :w].argmax(0)
        if uncertainty is not None:
            uncertainty[y:end] = normalized_entropy(mc[:, :, :w])
    bar.close()
    return Prediction(mask, uncertainty)


def image_files(folder: Path) -> list[Path]:
    """The images of ``folder`` (by extension, sorted); an error when there is none."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder of images")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DatasetError(f"{folder}: no image to predict (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return files


def predict_folder(model: EDConvNet, images: Path, out: Path, device: torch.device, tiling: Tiling = Tiling(),
                   passes: int = 0, progress: bool = False) -> Iterator[Path]:
    """Predict every image of ``images`` into ``out/<stem>.png`` (class ids) and, with ``passes`` > 0,
    ``out/uncertainty/<stem>.png`` (16-bit, scale in ``out/uncertainty/scale.json``); yields each mask
    written. A subfolder keeps the maps out of ``activeseg metrics --pred out``."""
    files = image_files(images)
    in_channels = model.encoder[0][0].in_channels
    out.mkdir(parents=True, exist_ok=True)
    if passes:
        (out / "uncertainty").mkdir(exist_ok=True)
        write_json(out / "uncertainty" / "scale.json", {
            "quantity": "predictive entropy H(mean_t p_t) of MC-dropout passes, divided by ln(classes)",
            "pixel": f"round(value x {UNCERTAINTY_SCALE}): 0 certain, {UNCERTAINTY_SCALE} uniform over the classes",
            "passes": passes, "classes": model.head.out_channels})
    for path in files:
        pixels = read_pixels(path)
        if pixels.shape[2] != in_channels:
            raise DatasetError(f"{path}: {pixels.shape[2]} channel(s), the model takes {in_channels}")
        result = predict_image(model, pixels, device, tiling, passes, progress, name=path.name)
        Image.fromarray(result.mask).save(out / f"{path.stem}.png")
        if result.uncertainty is not None:
            Image.fromarray(result.uncertainty).save(out / "uncertainty" / f"{path.stem}.png")
        yield out / f"{path.stem}.png"
