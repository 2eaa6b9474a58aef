"""Plain-folder datasets: ``images/<stem>.<ext>`` paired with ``masks/<stem>.png``, and/or whole-slide
images ``slides/<stem>.<tif|tiff|svs>`` with optional ``slide_masks/<stem>.tif`` (:mod:`.slides`).

Images are grey or RGB and may differ in size; masks are {0, 255} for binary data or integer class
ids. Loading fails with a :class:`DatasetError` naming the offending file: an unpaired file, an
unreadable file, a mask whose size differs from its image, a mask value outside the classes.
Nothing is silently dropped.

A file whose header declares more than :data:`MAX_PIXELS` pixels is refused before its pixels are
decoded (a decompression bomb: huge dimensions in a tiny file). Masks may be stored with a palette
(PNG mode ``P``: the palette index is the class id, the colours are ignored) or 16 bits deep (mode
``I;16``: the values are the class ids); either way the values must be class ids, or {0, 255} when binary.

Every reader of pixels for a region goes through :meth:`Dataset.region_pixels` / :meth:`Dataset.read`
(training crops, MC-dropout scoring, the label exchange, validation and evaluation), so a slide is
only ever read per region. Validation and evaluation score each image whole and each slide on its
tissue tiles (:meth:`Dataset.eval_units`): a slide is never predicted whole, and a slide-only test
split is scored tile by tile.
"""

from __future__ import annotations

import json
import warnings
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from activeseg.core.config import SlidesConfig
from activeseg.core.errors import DatasetError, check_pixels
from activeseg.core.partition import Region, mirror_pad, partition_image, whole_image
from activeseg.core.slides import SLIDE_EXTENSIONS, Slide

IMAGE_EXTENSIONS = (".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg")
T = TypeVar("T")


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
    pixels = read_pixels(path)
    return to_unit(pixels, *unit_range(pixels))


def read_pixels(path: Path) -> np.ndarray:
    """Read an image's pixels as stored (integer or float dtype), shape (H, W, C) with C = 1 or 3; an
    alpha channel is dropped. :func:`read_image` maps them to [0, 1]; tiled prediction does so tile by
    tile, so a large image is never held as float32 whole."""
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
    return arr[:, :, :3] if arr.shape[2] == 4 else arr


def unit_range(pixels: np.ndarray) -> tuple[float, float]:
    """The values mapped to 0 and 1: an integer dtype's full range (0 .. max), else the array's min and max."""
    if np.issubdtype(pixels.dtype, np.integer):
        return 0.0, float(np.iinfo(pixels.dtype).max)
    return float(pixels.min()), float(pixels.max())


def to_unit(pixels: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``pixels`` (any shape) as float32 (x - lo) / (hi - lo); all zeros when hi <= lo (a flat float image)."""
    if hi <= lo:
        return np.zeros(pixels.shape, np.float32)
    return (pixels.astype(np.float32) - np.float32(lo)) / np.float32(hi - lo)


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


def lru(cache: OrderedDict, size: int, key: Hashable, load: Callable[[], T]) -> T:
    """``cache[key]``, loaded on a miss; the least recently used entry beyond ``size`` is dropped."""
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    value = cache[key] = load()
    if len(cache) > size:
        cache.popitem(last=False)
    return value


@dataclass(frozen=True)
class Sample:
    """One image, or one whole-slide image when ``level`` is set (``height`` x ``width`` pixels of that
    pyramid level; ``mask_path`` is ``None`` for a slide without ground truth)."""

    stem: str
    image_path: Path
    mask_path: Path | None
    height: int
    width: int
    channels: int
    level: int | None = None


@dataclass
class Dataset:
    """A validated plain-folder dataset. Pixels are read on demand and kept in a bounded
    least-recently-used cache, so memory does not grow with the number of images. A whole-slide image
    is never read whole: :meth:`read` / :meth:`region_pixels` read one region of it."""

    root: Path
    classes: int
    samples: dict[str, Sample]
    cache_size: int = 128
    open_slides: int = 16  # slides kept open (about 1 MB each), least recently used closed first
    slides: SlidesConfig = field(default_factory=SlidesConfig)
    _cache: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _slides: OrderedDict = field(default_factory=OrderedDict, repr=False)

    def _cached(self, key: tuple[str, str], load: Callable[[], T]) -> T:
        return lru(self._cache, self.cache_size, key, load)

    @property
    def stems(self) -> list[str]:
        return sorted(self.samples)

    @property
    def channels(self) -> int:
        return next(iter(self.samples.values())).channels

    def is_slide(self, stem: str) -> bool:
        return self.samples[stem].level is not None

    def slide(self, stem: str) -> Slide:
        """The open slide (the ``open_slides`` most recently used stay open)."""
        s = self.samples[stem]
        return lru(self._slides, self.open_slides, stem, lambda: Slide(s.image_path, s.level, s.mask_path))

    def _whole(self, stem: str) -> None:
        if self.is_slide(stem):
            raise DatasetError(f"{self.samples[stem].image_path}: a whole-slide image is read per region, "
                               "never whole")

    def image(self, stem: str) -> np.ndarray:
        """(H, W, C) float32 in [0, 1]; not for a slide."""
        self._whole(stem)
        return self._cached(("image", stem), lambda: read_image(self.samples[stem].image_path))

    def mask(self, stem: str) -> np.ndarray:
        """(H, W) uint8 class ids; not for a slide."""
        self._whole(stem)
        return self._cached(("mask", stem), lambda: read_mask(self.samples[stem].mask_path, self.classes))

    def read(self, stem: str, ys: slice, xs: slice) -> np.ndarray:
        """(h, w, C) float32 in [0, 1]: the pixels ``[ys, xs]`` (inside the image or slide level)."""
        return self.slide(stem).read(ys, xs) if self.is_slide(stem) else self.image(stem)[ys, xs]

    def read_box(self, stem: str, box: tuple[int, int, int, int]) -> np.ndarray:
        """(h, w, C) pixels of ``box`` = (y0, x0, y1, x1), end exclusive, inside the image or slide level."""
        y0, x0, y1, x1 = box
        return self.read(stem, slice(y0, y1), slice(x0, x1))

    def read_mask(self, stem: str, ys: slice, xs: slice) -> np.ndarray:
        """(h, w) uint8 class ids of ``[ys, xs]`` (inside the image or slide level)."""
        if self.is_slide(stem):
            return self.slide(stem).read_mask(ys, xs, self.classes)
        return self.mask(stem)[ys, xs]

    def region_pixels(self, region: Region) -> np.ndarray:
        """(h, w, C) pixels of the whole box, mirror-padded where it leaves the image (like ``crop``)."""
        s = self.samples[region.stem]
        return mirror_pad(self.read(region.stem, *region.clipped(s.height, s.width)), region)

    def region_mask(self, region: Region) -> np.ndarray:
        """(h, w) class ids of the in-image part of the box."""
        s = self.samples[region.stem]
        return self.read_mask(region.stem, *region.clipped(s.height, s.width))

    def tiles(self, stem: str, side: int, overlap: float) -> list[Region]:
        """The patches of an image (FocAnnot); of a slide, those with at least ``slides.min_tissue`` tissue."""
        s = self.samples[stem]
        patches = partition_image(stem, s.height, s.width, side, overlap)
        if not self.is_slide(stem):
            return patches
        boxes = np.array([(r.y0, r.x0, r.y1, r.x1) for r in patches], np.int64).reshape(-1, 4)
        shares = self.slide(stem).tissue().shares(boxes)
        return [r for r, share in zip(patches, shares) if share >= self.slides.min_tissue]

    def eval_units(self, stems: list[str]) -> dict[str, Region]:
        """What validation and evaluation score, by name: each image whole (named by its stem), each
        slide's tissue tiles of side ``slides.eval_tile`` without overlap (named by region id)."""
        units: dict[str, Region] = {}
        for stem in stems:
            s = self.samples[stem]
            if self.is_slide(stem):
                tiles = self.tiles(stem, min(self.slides.eval_tile, s.height, s.width), 0.0)
                if not tiles:
                    raise DatasetError(f"{s.image_path}: no tissue tile to validate or evaluate on (data.slides."
                                       f"min_tissue {self.slides.min_tissue:g}); a blank slide?")
                units.update((r.id, r) for r in tiles)
            else:
                units[stem] = whole_image(stem, s.height, s.width)
        return units

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


def load_dataset(root: str | Path, classes: int = 2, slides: SlidesConfig | None = None) -> Dataset:
    """Index and check a dataset folder: ``images/`` + ``masks/``, ``slides/`` (+ ``slide_masks/``), or
    both. Every image pair is opened once to check it; a slide only by its header and one tile.

    Raises :class:`DatasetError` for a missing folder, an unpaired image or mask, an unreadable file,
    a mask whose size differs from its image, mask values outside ``0..classes-1``, a missing pyramid
    level, a stem used twice or mixed channels.
    """
    root = Path(root)
    dataset = Dataset(root=root, classes=classes, samples={}, slides=slides or SlidesConfig())
    has_slides = (root / "slides").is_dir()
    if not has_slides or (root / "images").is_dir():
        _add_images(dataset, root)
    if has_slides:
        _add_slides(dataset, root)
    channels = {s.channels for s in dataset.samples.values()}
    if len(channels) > 1:
        odd = next(s for s in dataset.samples.values() if s.channels != dataset.channels)
        raise DatasetError(f"{odd.image_path}: {odd.channels} channels where others have {dataset.channels}")
    return dataset


def _add_images(dataset: Dataset, root: Path) -> None:
    images_dir, masks_dir = root / "images", root / "masks"
    for folder in (images_dir, masks_dir):
        if not folder.is_dir():
            raise DatasetError(f"{folder}: folder not found (expected images/ and masks/, or slides/)")
    images = _index(images_dir, IMAGE_EXTENSIONS)
    masks = _index(masks_dir, (".png",))
    orphan = first_unpaired(images, masks)
    if orphan:
        stem, path, is_image = orphan
        raise DatasetError(f"{path}: no mask masks/{stem}.png" if is_image
                           else f"{path}: mask without an image of the same stem")
    if not images:
        raise DatasetError(f"{images_dir}: no images")
    for stem in sorted(images):
        image = read_image(images[stem])
        mask = read_mask(masks[stem], dataset.classes)
        if mask.shape != image.shape[:2]:
            raise DatasetError(
                f"{masks[stem]}: mask size {mask.shape[0]} x {mask.shape[1]} (height x width) differs from its "
                f"image's {image.shape[0]} x {image.shape[1]}"
            )
        dataset.samples[stem] = Sample(stem, images[stem], masks[stem], *mask.shape, image.shape[2])


def _add_slides(dataset: Dataset, root: Path) -> None:
    """Index ``slides/`` and the optional ``slide_masks/`` (a slide without a mask has no ground truth)."""
    slides = _index(root / "slides", SLIDE_EXTENSIONS)
    masks_dir = root / "slide_masks"
    masks = _index(masks_dir, (".tif", ".tiff")) if masks_dir.is_dir() else {}
    if not slides:
        raise DatasetError(f"{root / 'slides'}: no slides")
    orphan = sorted(set(masks) - set(slides))
    if orphan:
        raise DatasetError(f"{masks[orphan[0]]}: slide mask without a slide of the same stem")
    for stem, path in slides.items():
        if stem in dataset.samples:
            raise DatasetError(f"{path}: stem {stem!r} is also an image in images/")
        slide = Slide(path, dataset.slides.level, masks.get(stem))
        dataset.samples[stem] = Sample(stem, path, masks.get(stem), slide.height, slide.width, slide.channels,
                                       dataset.slides.level)


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
