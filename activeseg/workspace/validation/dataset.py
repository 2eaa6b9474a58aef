"""Dataset suite: every image has a mask and vice versa; files readable; names filesystem-safe; mask
sizes match their images; masks single-channel with values within the classes ({0, 255} counts as
binary, as in :func:`activeseg.core.data.read_mask`); no duplicate images (SHA-256 of the decoded pixels);
every image at least ``partition.side`` on its smaller side; the same number of channels everywhere;
with a frozen split: every image in it, the split file unchanged since it was frozen, and no image
outside the training pool ever queried.

Whole-slide images (``slides/``, optional ``slide_masks/``: :mod:`activeseg.core.slides`) are rows of
the same table (``kind`` "slide"), checked without ever decoding a slide whole: readable by tiffslide,
the pyramid level ``data.slides.level`` exists, the mask's level-0 size equals the slide's, the mask
single-channel with values within the classes, at least one tissue tile, and the checks above on the
chosen level (smaller side, channels). A slide without a mask passes (a human campaign has no ground
truth). Decisions:
- mask values are checked on a sample of level-0 tiles (:func:`mask_sample_origins`: up to 4 x 4 tiles
  of :data:`MASK_TILE` px spread evenly, which cover the whole mask up to 1024 x 1024 px), not on the
  mask's lowest pyramid level: a sub-resolution made by averaging holds values that are no class id;
- tissue tiles are counted as evaluation sees them (side ``data.slides.eval_tile``, no overlap, at
  least ``data.slides.min_tissue`` tissue): a slide that passes can be validated and evaluated on;
- duplicates of a slide are found by the SHA-256 of its file's bytes (streamed), not of its pixels.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from activeseg.core.config import SlidesConfig
from activeseg.core.data import IMAGE_EXTENSIONS, Dataset, DatasetError, Sample, read_image
from activeseg.core.slides import SLIDE_EXTENSIONS, Slide, open_tiff
from activeseg.core.util import canonical_json, sha256_file, sha256_text
from activeseg.workspace.validation.suite import (SAFE_STEM, Check, ValidationFailed, ValidationReport, decode_png,
                                                  num_text, pixels_outside_classes, run_suite, size_text)

if TYPE_CHECKING:
    import pandas as pd  # imported where a table is built: only a process that validates pays for it

MASK_TILE = 256
MASK_SAMPLE = 4  # tiles per axis


def _index(folder: Path) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            if not path.name.startswith(".") and not path.is_dir():
                found.setdefault(path.stem, []).append(path)
    return found


def _image_facts(path: Path) -> dict[str, Any]:
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return {"image_readable": False}
    try:
        pixels = read_image(path)
    except DatasetError:
        return {"image_readable": False}
    digest = hashlib.sha256(pixels.tobytes() + str(pixels.shape).encode()).hexdigest()
    return {"image_readable": True, "image_size": size_text(pixels.shape), "channels": pixels.shape[2],
            "min_side": min(pixels.shape[:2]), "content_sha256": digest}


def _mask_facts(path: Path, classes: int) -> dict[str, Any]:
    pixels = decode_png(path.read_bytes()) if path.suffix.lower() == ".png" else None
    if pixels is None:
        return {"mask_readable": False}
    facts = {"mask_readable": True, "mask_size": size_text(pixels.shape),
             "mask_channels": 1 if pixels.ndim == 2 else pixels.shape[2]}
    if pixels.ndim == 2:
        facts["outside_classes"] = pixels_outside_classes(pixels, classes, binary_255=True)
    return facts


def mask_sample_origins(height: int, width: int) -> list[tuple[int, int]]:
    """(y, x) origins of the level-0 tiles of :data:`MASK_TILE` px whose mask values are checked: up to
    :data:`MASK_SAMPLE` per axis, spread evenly from edge to edge (the whole mask when it is at most
    ``MASK_SAMPLE * MASK_TILE`` px on a side)."""
    def starts(n: int) -> list[int]:
        return sorted({round(v) for v in np.linspace(0, max(n - MASK_TILE, 0), MASK_SAMPLE)})

    return [(y, x) for y in starts(height) for x in starts(width)]


def _slide_facts(path: Path, slides: SlidesConfig) -> dict[str, Any]:
    """Facts of a slide from its header, one pixel and its thumbnail (never read whole)."""
    if path.suffix.lower() not in SLIDE_EXTENSIONS:
        return {"image_readable": False, "slide_problem": f"unreadable slide (not {', '.join(SLIDE_EXTENSIONS)})"}
    try:
        handle = open_tiff(path, "slide")
        facts = {"image_readable": True, "image_size": size_text(handle.dimensions[::-1]),
                 "level_exists": slides.level < handle.level_count, "levels": handle.level_count,
                 "content_sha256": sha256_file(path)}
        if not facts["level_exists"]:
            return facts
        slide = Slide(path, slides.level)
        one = Dataset(path.parent, 2, {path.stem: Sample(path.stem, path, None, slide.height, slide.width,
                                                         slide.channels, slides.level)}, slides=slides)
        side = min(slides.eval_tile, slide.height, slide.width)
        return {**facts, "channels": slide.channels, "min_side": min(slide.height, slide.width),
                "tissue_tiles": len(one.tiles(path.stem, side, 0.0)), "tile_side": side}
    except DatasetError as exc:  # unreadable, or a thumbnail too large to detect tissue on
        return {"image_readable": False, "slide_problem": str(exc).removeprefix(f"{path}: ")}


def _slide_mask_facts(path: Path, classes: int) -> dict[str, Any]:
    """Facts of a slide mask: its level-0 size; channels and values on :func:`mask_sample_origins` tiles."""
    try:
        mask = open_tiff(path, "slide mask")
        width, height = mask.dimensions
        tiles = [mask.read_region((x, y), 0, (min(MASK_TILE, width - x), min(MASK_TILE, height - y)),
                                  as_array=True) for y, x in mask_sample_origins(height, width)]
    except DatasetError:
        return {"mask_readable": False}
    channels = max(1 if t.ndim == 2 else t.shape[2] for t in tiles)
    facts = {"mask_readable": True, "mask_size": size_text((height, width)), "mask_channels": channels}
    if channels == 1:
        values = np.concatenate([t.ravel() for t in tiles])
        facts["outside_classes"] = pixels_outside_classes(values, classes, binary_255=True)
    return facts


def dataset_table(root: Path, classes: int, split: dict[str, list[str]] | None, queried_stems: set[str],
                  slides: SlidesConfig | None = None) -> pd.DataFrame:
    """One row per image file, per mask without an image, per slide, per slide mask without a slide,
    and per split stem without any of them."""
    import pandas as pd

    slides = slides or SlidesConfig()
    images, masks = _index(root / "images"), _index(root / "masks")
    slide_files, slide_masks = _index(root / "slides"), _index(root / "slide_masks")
    where = {stem: part for part, stems in (split or {}).items() for stem in stems}
    rows = []

    def add(stem: str, kind: str, file: Path | None, mask: Path | None, name: str) -> dict[str, Any]:
        row = {"name": name, "stem": stem, "kind": kind, "image": file.name if file else None,
               "mask": mask.name if mask else None, "split": where.get(stem),
               "queried_outside_train": stem in queried_stems and where.get(stem) != "train"}
        rows.append(row)
        return row

    for stem in sorted(set(images) | set(masks) | set(slide_files) | set(slide_masks) | set(where)):
        is_slide = stem in slide_files or stem in slide_masks
        if stem in images or stem in masks or not is_slide:
            for image in images.get(stem) or [None]:
                mask = (masks.get(stem) or [None])[0]
                row = add(stem, "image", image, mask, f"images/{image.name}" if image else
                          f"masks/{mask.name}" if mask else f"{stem} (in split.json)")
                row.update(_image_facts(image) if image else {})
                row.update(_mask_facts(mask, classes) if mask else {})
        if is_slide:
            for slide in slide_files.get(stem) or [None]:
                mask = (slide_masks.get(stem) or [None])[0]
                row = add(stem, "slide", slide, mask, f"slides/{slide.name}" if slide else f"slide_masks/{mask.name}")
                row.update(_slide_facts(slide, slides) if slide else {})
                row.update(_slide_mask_facts(mask, classes) if mask else {})
    columns = ["name", "stem", "kind", "image", "mask", "split", "queried_outside_train", "image_readable",
               "image_size", "channels", "min_side", "content_sha256", "mask_readable", "mask_size", "mask_channels",
               "outside_classes", "slide_problem", "levels", "level_exists", "tissue_tiles", "tile_side"]
    return pd.DataFrame(rows, columns=columns)


def _masks_folder(row: dict) -> str:
    return "slide_masks" if row["kind"] == "slide" else "masks"


DATA_FOLDERS = ("images", "masks", "slides", "slide_masks")


def dataset_fingerprint(root: str | Path, classes: int, patch_side: int, split: dict[str, list[str]] | None,
                        split_intact: bool, queried_stems: Iterable[str], slides: SlidesConfig) -> str:
    """What the dataset suite's verdict depends on, hashed: every file under ``root``'s data folders
    (path, size, modification time: as DVC and make tell a changed file, without reading it), the
    suite's inputs (of the queried images only those outside the training pool: the suite checks no
    more about them, and the pool grows every round), and the suite's own code (this package's
    sources). The same fingerprint gives the same report, so a round whose data did not change reuses
    the last one instead of importing Great Expectations again (see
    :func:`activeseg.workspace.steps.check_dataset`)."""
    root = Path(root)
    files = [(p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
             for folder in DATA_FOLDERS if (root / folder).is_dir()
             for p in sorted((root / folder).rglob("*")) if p.is_file()]
    code = [sha256_file(p) for p in sorted(Path(__file__).parent.glob("*.py"))]
    outside = sorted(set(queried_stems) - set((split or {}).get("train", [])))
    return sha256_text(canonical_json({
        "files": files, "classes": classes, "patch_side": patch_side, "split": split, "split_intact": split_intact,
        "queried_outside_train": outside, "slides": slides.model_dump(), "code": code}))


def validate_dataset(root: str | Path, classes: int, patch_side: int, split: dict[str, list[str]] | None = None,
                     split_intact: bool = True, queried_stems: Iterable[str] = (),
                     slides: SlidesConfig | None = None) -> ValidationReport:
    """The dataset suite (see the module docstring) over ``root/images`` and ``root/masks``, and
    ``root/slides`` and ``root/slide_masks`` read as ``slides`` (``data.slides``) says.

    ``split``: the frozen split, when there is one; ``split_intact``: whether the split file still
    has the hash recorded when it was frozen; ``queried_stems``: images any region of which was ever
    queried.
    """
    import great_expectations.expectations as gxe
    import pandas as pd

    root, slides = Path(root), slides or SlidesConfig()
    df = dataset_table(root, classes, split, set(queried_stems), slides)
    if df.empty:
        raise ValidationFailed(str(root), ValidationReport("dataset", False, [f"{root}/images: no images"]))
    majority = Counter(df["channels"].dropna().astype(int)).most_common(1)
    channels = majority[0][0] if majority else 3
    checks = [
        Check(gxe.ExpectColumnValuesToMatchRegex(column="stem", regex=SAFE_STEM),
              lambda r: "file name not filesystem-safe (letters, digits, '.', '_', '-' only)"),
        Check(gxe.ExpectColumnValuesToBeUnique(column="stem"), lambda r: "another image has the same stem"),
        Check(gxe.ExpectColumnValuesToNotBeNull(column="image"),
              lambda r: f"no slide in slides/ for stem {r['stem']}" if r["kind"] == "slide"
              else f"no image in images/ for stem {r['stem']}"),
        Check(gxe.ExpectColumnValuesToNotBeNull(column="mask", row_condition='kind=="image"',
                                                condition_parser="pandas"),  # a slide without a mask: for people
              lambda r: f"no mask masks/{r['stem']}.png"),
        Check(gxe.ExpectColumnValuesToBeInSet(column="image_readable", value_set=[True]),
              lambda r: r["slide_problem"] if r["kind"] == "slide"
              else f"unreadable image (supported: {', '.join(IMAGE_EXTENSIONS)})"),
        Check(gxe.ExpectColumnValuesToBeInSet(column="mask_readable", value_set=[True]),
              lambda r: f"unreadable slide mask slide_masks/{r['mask']} (a TIFF that tiffslide reads)"
              if r["kind"] == "slide" else f"unreadable mask masks/{r['mask']} (masks are PNG)"),
        Check(gxe.ExpectColumnValuesToBeInSet(column="mask_channels", value_set=[1]),
              lambda r: f"mask {_masks_folder(r)}/{r['mask']} has {num_text(r['mask_channels'])} channels, "
                        "expected one"),
        Check(gxe.ExpectColumnPairValuesToBeEqual(column_A="image_size", column_B="mask_size",
                                                  ignore_row_if="either_value_is_missing"),
              lambda r: f"mask size {r['mask_size']} (height x width) differs from the "
                        + ("slide's level 0 " if r["kind"] == "slide" else "image's ") + r["image_size"]),
        Check(gxe.ExpectColumnValuesToBeInSet(column="level_exists", value_set=[True]),
              lambda r: f"no pyramid level {slides.level} (data.slides.level); the slide has levels "
                        f"0..{num_text(r['levels'] - 1)}"),
        Check(gxe.ExpectColumnValuesToBeBetween(column="tissue_tiles", min_value=1),
              lambda r: f"no tissue tile of {num_text(r['tile_side'])} px at level {slides.level} with at least "
                        f"data.slides.min_tissue = {slides.min_tissue:g} tissue (a blank slide?)"),
        Check(gxe.ExpectColumnValuesToBeBetween(column="outside_classes", max_value=0),
              lambda r: f"{num_text(r['outside_classes'])} mask pixels"
                        f"{' (of the sampled level-0 tiles)' if r['kind'] == 'slide' else ''} outside the classes "
                        f"0..{classes - 1}"),
        Check(gxe.ExpectColumnValuesToBeUnique(column="content_sha256"),
              lambda r: "duplicate: the same pixels as another image"),
        Check(gxe.ExpectColumnValuesToBeBetween(column="min_side", min_value=patch_side),
              lambda r: f"smaller side {num_text(r['min_side'])} px"
                        f"{f' at level {slides.level}' if r['kind'] == 'slide' else ''} is below partition.side = "
                        f"{patch_side}"),
        Check(gxe.ExpectColumnValuesToBeInSet(column="channels", value_set=[channels]),
              lambda r: f"{num_text(r['channels'])} channels where the others have {channels}"),
    ]
    tables = {"images": (df, checks)}
    if split is not None:
        checks += [
            Check(gxe.ExpectColumnValuesToNotBeNull(column="split"),
                  lambda r: "not in the frozen split (the dataset changed after the split was frozen)"),
            Check(gxe.ExpectColumnValuesToBeInSet(column="queried_outside_train", value_set=[False]),
                  lambda r: f"regions of this image were queried, but it is in the {r['split']} split"),
        ]
        frozen = pd.DataFrame([{"name": "split.json", "intact": split_intact}])
        tables["split"] = (frozen, [Check(gxe.ExpectColumnValuesToBeInSet(column="intact", value_set=[True]),
                                          lambda r: "differs from the split frozen at init (ledger split_frozen)")])
    return run_suite("dataset", tables)
