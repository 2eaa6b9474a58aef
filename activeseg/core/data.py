"""Plain-folder datasets: ``images/<stem>.<ext>`` paired with ``masks/<stem>.png``.

Images are grey or RGB and may differ in size; masks are {0, 255} for binary data or integer class
ids. Loading fails with a :class:`DatasetError` naming the offending file: an unpaired file, an
unreadable file, a mask whose size differs from its image, a mask value outside the classes.
Nothing is silently dropped.

A file whose header declares more than :data:`MAX_PIXELS` pixels is refused before its pixels are
decoded (a decompression bomb: huge dimensions in a tiny file). Masks may be stored with a palette
(PNG mode ``P``: the palette index is the class id, the colours are ignored) or 16 bits deep (mode
``I;16``: the values are the class ids); either way the values must be class ids, or {0, 255} when binary.
"""

from __future__ import annotations

import json
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg")
MAX_PIXELS = Image.MAX_IMAGE_PIXELS  # Pillow's own decompression-bomb threshold (about 89 million pixels)


class DatasetError(ValueError):
    """The dataset folder is not usable; the message names the file and the problem."""


def check_pixels(path: Path, width: int, height: int, what: str) -> None:
    """Refuse a file whose header declares more than :data:`MAX_PIXELS` pixels, before decoding it."""
    if width * height > MAX_PIXELS:
        raise DatasetError(f"{path}: {what} declares {width}x{height} pixels, over the limit of {MAX_PIXELS} "
                           "(a decompression bomb?); not decoded")


def open_checked(path: Path, what: str) -> Image.Image:
    """Open an image without decoding its pixels and refuse it (closed) when its header declares more
    than :data:`MAX_PIXELS`; Pillow's own bomb warning is silenced, this check replaces it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = Image.open(path)
    try:
        check_pixels(path, *img.size, what)
    except DatasetError:
        img.close()
        raise
    return img


def read_image(path: Path) -> np.ndarray:
    """Read an image as float32 in [0, 1], shape (H, W, C) with C = 1 or 3."""
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                shape = tif.pages[0].shape
                check_pixels(path, shape[1], shape[0], "image")
                arr = np.asarray(tif.asarray())
        else:
            with open_checked(path, "image") as img:
                img.load()
                if img.mode not in ("L", "RGB", "I;16", "I", "F"):
                    img = img.convert("RGB")
                arr = np.asarray(img)
    except DatasetError:
        raise
    except Exception as exc:  # Pillow and tifffile raise many kinds
        raise DatasetError(f"{path}: unreadable image ({exc})") from None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise DatasetError(f"{path}: expected a grey or RGB image, got shape {arr.shape}")
    arr = arr[:, :, :3] if arr.shape[2] == 4 else arr
    if np.issubdtype(arr.dtype, np.integer):
        return (arr.astype(np.float32) / np.iinfo(arr.dtype).max).astype(np.float32)
    arr = arr.astype(np.float32)
    lo, hi = float(arr.min()), float(arr.max())
    return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)


def read_mask(path: Path, classes: int) -> np.ndarray:
    """Read a mask as uint8 class ids, shape (H, W): {0, 255} maps to {0, 1}. A palette PNG gives its
    indices (not its colours), a 16-bit PNG its values; both must then be class ids (or {0, 255})."""
    try:
        with open_checked(path, "mask") as img:
            img.load()
            arr = np.asarray(img)
    except DatasetError:
        raise
    except Exception as exc:
        raise DatasetError(f"{path}: unreadable mask ({exc})") from None
    if arr.ndim != 2:
        raise DatasetError(f"{path}: a mask must have a single channel, got shape {arr.shape}")
    values = np.unique(arr)
    if values.size and values.max() == 255 and set(values.tolist()) <= {0, 255}:
        return (arr > 0).astype(np.uint8)
    if values.size and (values.min() < 0 or values.max() >= classes):
        raise DatasetError(
            f"{path}: mask values {values.tolist()[:10]} outside the classes 0..{classes - 1}"
        )
    return arr.astype(np.uint8)


@dataclass(frozen=True)
class Sample:
    stem: str
    image_path: Path
    mask_path: Path
    height: int
    width: int
    channels: int


@dataclass
class Dataset:
    """A validated plain-folder dataset. Pixels are read on demand and kept in a bounded
    least-recently-used cache, so memory does not grow with the number of images."""

    root: Path
    classes: int
    samples: dict[str, Sample]
    cache_size: int = 128
    _cache: OrderedDict = field(default_factory=OrderedDict, repr=False)

    def _cached(self, key: tuple[str, str], load) -> np.ndarray:
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        value = self._cache[key] = load()
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return value

    @property
    def stems(self) -> list[str]:
        return sorted(self.samples)

    @property
    def channels(self) -> int:
        return next(iter(self.samples.values())).channels

    def image(self, stem: str) -> np.ndarray:
        """(H, W, C) float32 in [0, 1]."""
        return self._cached(("image", stem), lambda: read_image(self.samples[stem].image_path))

    def mask(self, stem: str) -> np.ndarray:
        """(H, W) uint8 class ids."""
        return self._cached(("mask", stem), lambda: read_mask(self.samples[stem].mask_path, self.classes))

    def pixels(self, stems: list[str]) -> int:
        return sum(self.samples[s].height * self.samples[s].width for s in stems)


def _index(folder: Path, extensions: tuple[str, ...]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.is_dir():
            continue
        if path.suffix.lower() not in extensions:
            raise DatasetError(f"{path}: unsupported file type (expected {', '.join(extensions)})")
        if path.stem in found:
            raise DatasetError(f"{path}: duplicate stem, also {found[path.stem].name}")
        found[path.stem] = path
    return found


def first_unpaired(left: dict[str, Path], right: dict[str, Path]) -> tuple[str, Path, bool] | None:
    """The first stem (in sorted order) found on one side only: ``(stem, its path, whether it is in
    left)``; ``None`` when both sides hold the same stems."""
    orphans = sorted([(s, left[s], True) for s in set(left) - set(right)] +
                     [(s, right[s], False) for s in set(right) - set(left)], key=lambda o: (not o[2], o[0]))
    return orphans[0] if orphans else None


def load_dataset(root: str | Path, classes: int = 2) -> Dataset:
    """Index and check a dataset folder; every pair is opened once to check it.

    Raises :class:`DatasetError` for a missing folder, an unpaired image or mask, an unreadable file,
    a mask whose size differs from its image, mask values outside ``0..classes-1`` or mixed channels.
    """
    root = Path(root)
    images_dir, masks_dir = root / "images", root / "masks"
    for folder in (images_dir, masks_dir):
        if not folder.is_dir():
            raise DatasetError(f"{folder}: folder not found (expected images/ and masks/)")
    images = _index(images_dir, IMAGE_EXTENSIONS)
    masks = _index(masks_dir, (".png",))
    orphan = first_unpaired(images, masks)
    if orphan:
        stem, path, is_image = orphan
        raise DatasetError(f"{path}: no mask masks/{stem}.png" if is_image
                           else f"{path}: mask without an image of the same stem")
    if not images:
        raise DatasetError(f"{images_dir}: no images")
    dataset = Dataset(root=root, classes=classes, samples={})
    for stem in sorted(images):
        image = read_image(images[stem])
        mask = read_mask(masks[stem], classes)
        if mask.shape != image.shape[:2]:
            raise DatasetError(
                f"{masks[stem]}: mask size {mask.shape[1]}x{mask.shape[0]} differs from its image "
                f"{image.shape[1]}x{image.shape[0]}"
            )
        dataset.samples[stem] = Sample(stem, images[stem], masks[stem], *mask.shape, image.shape[2])
    channels = {s.channels for s in dataset.samples.values()}
    if len(channels) > 1:
        odd = next(s for s in dataset.samples.values() if s.channels != dataset.channels)
        raise DatasetError(f"{odd.image_path}: {odd.channels} channels where others have {dataset.channels}")
    return dataset


def make_split(stems: list[str], train: float, val: float, seed: int) -> dict[str, list[str]]:
    """Seeded split by image; every part gets at least one image."""
    if len(stems) < 3:
        raise DatasetError(f"need at least 3 images to split into train/val/test, got {len(stems)}")
    order = np.random.default_rng(seed).permutation(sorted(stems))
    n_val = max(1, round(val * len(stems)))
    n_test = max(1, round((1 - train - val) * len(stems)))
    n_train = len(stems) - n_val - n_test
    if n_train < 1:
        raise DatasetError(f"split leaves no training image among {len(stems)}")
    parts = {"train": order[:n_train], "val": order[n_train : n_train + n_val], "test": order[n_train + n_val :]}
    return {k: sorted(v.tolist()) for k, v in parts.items()}


def load_or_create_split(path: Path, stems: list[str], train: float, val: float, seed: int) -> dict[str, list[str]]:
    """The split is written once and never changed; later calls check it still fits the dataset."""
    path = Path(path)
    if path.exists():
        split = json.loads(path.read_text())
        recorded = sorted(s for part in split.values() for s in part)
        if recorded != sorted(stems):
            raise DatasetError(f"{path}: the frozen split does not match the dataset's images")
        return split
    split = make_split(stems, train, val, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(split, indent=1))
    return split
