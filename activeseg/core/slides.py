"""Whole-slide images (pyramidal TIFF, OME-TIFF, SVS: what ``tiffslide`` reads), read lazily per region.

A dataset folder may hold ``slides/<stem>.<tif|tiff|svs>`` with ground truth in
``slide_masks/<stem>.tif`` (class ids at level-0 size; none for a human campaign). Regions of a slide
are boxes in pixels of one pyramid level (``data.slides.level``); level-0 coordinates (QuPath's) are
these times the level's downsample. Pixels are read per region (``TiffSlide.read_region``, which
decodes only the tiles the box touches), never the whole slide.

Decisions where the issue is open:
- tissue is detected on the smallest pyramid level (the thumbnail): Otsu's threshold on the HSV
  saturation (stained tissue is coloured, glass is white or grey); a grey slide has no saturation, so
  all of it counts as tissue;
- a mask region at the slide's level takes the level-0 pixel at ``floor(coordinate x downsample)``
  (nearest neighbour, so class ids stay class ids); 255 reads as class 1 in a binary dataset;
- a gigapixel mask is not scanned at load: its size is checked then, its values per region read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from activeseg.core.errors import DatasetError, check_pixels

SLIDE_EXTENSIONS = (".tif", ".tiff", ".svs")


def open_tiff(path: Path, what: str):
    """A ``tiffslide.TiffSlide`` over ``path``; an unreadable file fails naming it."""
    import tiffslide

    try:
        return tiffslide.TiffSlide(path)
    except Exception as exc:  # tifffile and tiffslide raise many kinds
        raise DatasetError(f"{path}: unreadable {what} ({exc})") from None


def unit_float(arr: np.ndarray) -> np.ndarray:
    """(h, w[, C]) integer pixels -> (h, w, C) float32 in [0, 1], C = 1 or 3 (an alpha channel dropped)."""
    arr = arr[:, :, None] if arr.ndim == 2 else arr[:, :, :3]
    return arr.astype(np.float32) / np.float32(np.iinfo(arr.dtype).max)


@dataclass(frozen=True)
class TissueMap:
    """Tissue on the thumbnail: ``mask`` (h, w) bool; ``scale`` slide-level pixels per thumbnail pixel."""

    mask: np.ndarray
    scale: float

    def shares(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) boxes ``y0, x0, y1, x1`` at the slide's level -> (N,) share of tissue in each, from
        the thumbnail pixels the box touches (summed-area table: O(1) per box)."""
        h, w = self.mask.shape
        table = np.zeros((h + 1, w + 1), np.int64)
        table[1:, 1:] = self.mask.cumsum(0).cumsum(1)
        y0 = np.clip(np.floor(boxes[:, 0] / self.scale).astype(int), 0, h - 1)
        x0 = np.clip(np.floor(boxes[:, 1] / self.scale).astype(int), 0, w - 1)
        y1 = np.clip(np.ceil(boxes[:, 2] / self.scale).astype(int), y0 + 1, h)
        x1 = np.clip(np.ceil(boxes[:, 3] / self.scale).astype(int), x0 + 1, w)
        inside = table[y1, x1] - table[y0, x1] - table[y1, x0] + table[y0, x0]
        return inside / ((y1 - y0) * (x1 - x0))


def detect_tissue(thumbnail: np.ndarray) -> np.ndarray:
    """(h, w) bool tissue of an (h, w, C) uint8 thumbnail: saturation above its Otsu threshold; all
    True for a grey (C = 1) thumbnail, all False for one of a single saturation (a blank slide)."""
    from skimage.color import rgb2hsv
    from skimage.filters import threshold_otsu

    if thumbnail.shape[2] == 1:
        return np.ones(thumbnail.shape[:2], bool)
    saturation = rgb2hsv(thumbnail[:, :, :3])[:, :, 1]
    if np.ptp(saturation) == 0:
        return np.zeros(saturation.shape, bool)
    return saturation > threshold_otsu(saturation)


class Slide:
    """One slide read at pyramid ``level``: ``height`` x ``width`` pixels of that level, ``channels``,
    ``downsample`` (level-0 pixels per level pixel); its mask (level-0 size) when ``mask_path`` is set.
    Opening reads the header and one tile, nothing more."""

    def __init__(self, path: Path, level: int, mask_path: Path | None = None) -> None:
        self.path, self.level, self.mask_path = path, level, mask_path
        self.handle = open_tiff(path, "slide")
        count = self.handle.level_count
        if level >= count:
            raise DatasetError(f"{path}: no pyramid level {level} (data.slides.level); the slide has "
                               f"levels 0..{count - 1}")
        self.width, self.height = self.handle.level_dimensions[level]
        self.downsample = float(self.handle.level_downsamples[level])
        self.channels = self.read(slice(0, 1), slice(0, 1)).shape[2]
        self.mask = None if mask_path is None else open_tiff(mask_path, "slide mask")
        if self.mask is not None and self.mask.dimensions != self.handle.dimensions:
            (mask_w, mask_h), (slide_w, slide_h) = self.mask.dimensions, self.handle.dimensions
            raise DatasetError(f"{mask_path}: mask size {mask_h} x {mask_w} (height x width) differs from its "
                               f"slide's level 0 {slide_h} x {slide_w}")

    def read(self, ys: slice, xs: slice) -> np.ndarray:
        """(h, w, C) float32 in [0, 1]: the pixels ``[ys, xs]`` of the level, inside the slide."""
        location = (round(xs.start * self.downsample), round(ys.start * self.downsample))
        size = (xs.stop - xs.start, ys.stop - ys.start)
        return unit_float(self.handle.read_region(location, self.level, size, as_array=True))

    def read_mask(self, ys: slice, xs: slice, classes: int) -> np.ndarray:
        """(h, w) uint8 class ids of the box ``[ys, xs]`` of the level (nearest level-0 pixel)."""
        if self.mask is None:
            raise DatasetError(f"{self.path}: no ground truth slide_masks/{self.path.stem}.tif")
        rows = np.floor(np.arange(ys.start, ys.stop) * self.downsample).astype(int)
        cols = np.floor(np.arange(xs.start, xs.stop) * self.downsample).astype(int)
        size = (int(cols[-1] - cols[0]) + 1, int(rows[-1] - rows[0]) + 1)
        box = self.mask.read_region((int(cols[0]), int(rows[0])), 0, size, as_array=True)
        labels = (box[:, :, 0] if box.ndim == 3 else box)[np.ix_(rows - rows[0], cols - cols[0])]
        if classes == 2:
            labels = np.where(labels == 255, 1, labels)
        if labels.size and labels.max() >= classes:
            raise DatasetError(f"{self.mask_path}: mask value {int(labels.max())} near level-0 pixel "
                               f"(x={cols[0]}, y={rows[0]}) outside the classes 0..{classes - 1}")
        return labels.astype(np.uint8)

    def tissue(self) -> TissueMap:
        """Tissue detected on the smallest pyramid level (refused when it is a decompression bomb)."""
        last = self.handle.level_count - 1
        width, height = self.handle.level_dimensions[last]
        check_pixels(self.path, width, height, "the smallest pyramid level (thumbnail)")
        thumbnail = self.handle.read_region((0, 0), last, (width, height), as_array=True)
        thumbnail = thumbnail[:, :, None] if thumbnail.ndim == 2 else thumbnail
        scale = float(self.handle.level_downsamples[last]) / self.downsample
        return TissueMap(detect_tissue(thumbnail), scale)


def write_pyramid(path: Path, image: np.ndarray, levels: int = 3, tile: int = 64) -> Path:
    """Write an (H, W[, C]) uint8 array as a tiled pyramidal TIFF: level 0 and ``levels - 1``
    sub-resolutions (each half the previous, every other pixel) in SubIFDs, the layout tiffslide reads."""
    import tifffile

    photometric = "rgb" if image.ndim == 3 else "minisblack"
    with tifffile.TiffWriter(path) as tif:
        tif.write(image, tile=(tile, tile), subifds=levels - 1, photometric=photometric)
        for k in range(1, levels):
            tif.write(image[:: 2**k, :: 2**k], tile=(tile, tile), subfiletype=1, photometric=photometric)
    return path
