"""Training crops from revealed pixels: where crops are centred, the crop windows and their weights,
augmentation, and a (share of a) batch.

A crop centre is a labeled pixel drawn uniformly over every labeled pixel of the training
images (so an image or region contributes in proportion to its labeled pixels); with
``foreground_oversample = f`` a fraction ``f`` of the crops is centred on a labeled foreground pixel
(class > 0) instead. The (crop, crop) window is centred on that pixel and shifted inside the image.
Per pixel, the weight is 1 where a human label is known, ``train.pseudo_weight`` where only a
pseudo-label is, and 0 elsewhere. Random flips and 90-degree rotations, then the augmentation of
``train.augment`` (:mod:`activeseg.model.augment`; off by default).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from activeseg.core.config import Config
from activeseg.core.data import Dataset
from activeseg.core.labels import LabelState
from activeseg.core.partition import Region, crop
from activeseg.model.augment import augment_batch, draw, is_on
from activeseg.model.inference import to_tensor


@dataclass
class PixelPool:
    """Pixels over several images, drawn uniformly: the flat indices of each image's pixels, concatenated."""

    stems: list[str]
    widths: list[int]
    ends: np.ndarray  # (S,) cumulative pixel counts per image
    flat: np.ndarray  # (P,) flat index of each pixel inside its image

    @classmethod
    def of(cls, masks: dict[str, np.ndarray]) -> PixelPool:
        """The True pixels of ``masks`` ((H, W) bool per stem)."""
        stems = [s for s, m in masks.items() if m.any()]
        flats = [np.flatnonzero(masks[s]) for s in stems]
        return cls(stems, [masks[s].shape[1] for s in stems], np.cumsum([len(f) for f in flats], dtype=np.int64),
                   np.concatenate(flats) if flats else np.zeros(0, np.int64))

    def __len__(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    def draw(self, rng: np.random.Generator) -> tuple[str, int, int]:
        """One pixel, each with probability 1 / len(self): (stem, y, x)."""
        i = int(rng.integers(len(self)))
        k = int(np.searchsorted(self.ends, i, side="right"))
        y, x = divmod(int(self.flat[i]), self.widths[k])
        return self.stems[k], y, x


@dataclass
class CropCentres:
    """Where crops are centred: any labeled pixel, or (a fraction ``foreground_oversample`` of the
    time) a labeled foreground pixel."""

    labeled: PixelPool
    foreground: PixelPool
    foreground_oversample: float

    @classmethod
    def of(cls, state: LabelState, foreground_oversample: float) -> CropCentres:
        labeled = {s: state.known[s] | state.pseudo_known[s] for s in state.shapes}
        foreground = {s: np.where(state.known[s], state.labels[s], state.pseudo[s] * state.pseudo_known[s]) > 0
                      for s in state.shapes}
        return cls(PixelPool.of(labeled), PixelPool.of(foreground), foreground_oversample)

    def draw(self, rng: np.random.Generator) -> tuple[str, int, int]:
        oversample = self.foreground_oversample > 0 and len(self.foreground) > 0
        if oversample and rng.random() < self.foreground_oversample:
            return self.foreground.draw(rng)
        return self.labeled.draw(rng)


def crop_window(shape: tuple[int, int], centre: tuple[str, int, int], side: int) -> Region:
    """The (side, side) window centred on ``centre`` = (stem, y, x), shifted inside an image of ``shape``
    (H, W) (it sticks out below and right of an image smaller than ``side``)."""
    stem, cy, cx = centre
    h, w = shape
    y0 = int(np.clip(cy - side // 2, 0, max(0, h - side)))
    x0 = int(np.clip(cx - side // 2, 0, max(0, w - side)))
    return Region(stem, y0, x0, y0 + side, x0 + side)


def sample_crop(state: LabelState, dataset: Dataset, centre: tuple[str, int, int], side: int,
                pseudo_weight: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (side, side) window centred on ``centre`` = (stem, y, x), shifted inside the image:
    image (side, side, C), target and weight (side, side)."""
    stem = centre[0]
    h, w = state.shapes[stem]
    window = crop_window((h, w), centre, side)
    known = crop(state.known[stem], window)
    pseudo_known = crop(state.pseudo_known[stem], window) & ~known
    target = np.where(known, crop(state.labels[stem], window), crop(state.pseudo[stem], window))
    weight = known.astype(np.float32) + pseudo_weight * pseudo_known.astype(np.float32)
    # mirror padding repeats pixels of small images; count each real pixel once
    ys, xs = window.clipped(h, w)
    weight[ys.stop - ys.start :, :] = 0
    weight[:, xs.stop - xs.start :] = 0
    return dataset.region_pixels(window), target, weight


def augment(x: torch.Tensor, y: torch.Tensor, wgt: torch.Tensor, turns: int, flip: bool):
    """``turns`` 90-degree rotations, then a horizontal flip if ``flip``, of image (C, H, W), target and
    weight (H, W) alike."""
    x, y, wgt = torch.rot90(x, turns, (1, 2)), torch.rot90(y, turns, (0, 1)), torch.rot90(wgt, turns, (0, 1))
    if flip:
        x, y, wgt = x.flip(2), y.flip(1), wgt.flip(1)
    return x, y, wgt


def make_batch(state: LabelState, dataset: Dataset, centres: CropCentres, cfg: Config, rng: np.random.Generator,
               share: range | None = None,
               strengths: dict[str, float] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Augmented crops of the samples ``share`` (default: all) of a global batch of ``train.batch_size``:
    images (N, C, crop, crop), targets and weights (N, crop, crop). Every sample's centre, rotation and
    flip are drawn from ``rng`` whether in the share or not, so processes with the same stream cut
    disjoint parts of one batch. With ``strengths`` (``train.augment`` resolved by
    :func:`activeseg.model.augment.resolve`) and any above 0, the batch is then augmented with draws for
    the whole global batch from a generator seeded by ``rng`` (none is drawn otherwise)."""
    t = cfg.train
    xs, ys, ws = [], [], []
    for i in range(t.batch_size):
        centre, turns, flip = centres.draw(rng), int(rng.integers(0, 4)), bool(rng.random() < 0.5)
        if share is not None and i not in share:
            continue
        image, target, weight = sample_crop(state, dataset, centre, t.crop, t.pseudo_weight)
        x, y, w = augment(to_tensor(image), torch.from_numpy(target.astype(np.int64)), torch.from_numpy(weight),
                          turns, flip)
        xs.append(x), ys.append(y), ws.append(w)
    batch = torch.stack(xs), torch.stack(ys), torch.stack(ws)
    if strengths is None or not is_on(strengths):
        return batch
    draws = draw(strengths, t.batch_size, batch[0].shape[1], t.crop,
                 torch.Generator().manual_seed(int(rng.integers(2**63))))
    return augment_batch(*batch, strengths, draws.take([i for i in range(t.batch_size) if share is None or i in share]))
