"""Dataset suite: every image has a mask and vice versa; files readable; names filesystem-safe; mask
sizes match their images; masks single-channel with values within the classes ({0, 255} counts as
binary, as in :func:`activeseg.core.data.read_mask`); no duplicate images (SHA-256 of the decoded pixels);
every image at least ``partition.side`` on its smaller side; the same number of channels everywhere;
with a frozen split: every image in it, the split file unchanged since it was frozen, and no image
outside the training pool ever queried.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from activeseg.core.data import IMAGE_EXTENSIONS, DatasetError, read_image
from activeseg.workspace.validation.suite import (SAFE_STEM, Check, ValidationFailed, ValidationReport, decode_png,
                                                  num_text, pixels_outside_classes, run_suite, size_text)

if TYPE_CHECKING:
    import pandas as pd  # imported where a table is built: only a process that validates pays for it

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


def dataset_table(root: Path, classes: int, split: dict[str, list[str]] | None,
                  queried_stems: set[str]) -> pd.DataFrame:
    """One row per image file, per mask without an image, and per split stem without either."""
    import pandas as pd

    images, masks = _index(root / "images"), _index(root / "masks")
    where = {stem: part for part, stems in (split or {}).items() for stem in stems}
    rows = []
    for stem in sorted(set(images) | set(masks) | set(where)):
        files = images.get(stem) or [None]
        for image in files:
            mask = (masks.get(stem) or [None])[0]
            name = (f"images/{image.name}" if image else f"masks/{mask.name}" if mask else f"{stem} (in split.json)")
            row = {"name": name, "stem": stem, "image": image.name if image else None,
                   "mask": mask.name if mask else None, "split": where.get(stem),
                   "queried_outside_train": stem in queried_stems and where.get(stem) != "train"}
            if image:
                row.update(_image_facts(image))
            if mask:
                row.update(_mask_facts(mask, classes))
            rows.append(row)
    columns = ["name", "stem", "image", "mask", "split", "queried_outside_train", "image_readable", "image_size",
               "channels", "min_side", "content_sha256", "mask_readable", "mask_size", "mask_channels",
               "outside_classes"]
    return pd.DataFrame(rows, columns=columns)


def validate_dataset(root: str | Path, classes: int, patch_side: int, split: dict[str, list[str]] | None = None,
                     split_intact: bool = True, queried_stems: Iterable[str] = ()) -> ValidationReport:
    """The dataset suite (see the module docstring) over ``root/images`` and ``root/masks``.

    ``split``: the frozen split, when there is one; ``split_intact``: whether the split file still
    has the hash recorded when it was frozen; ``queried_stems``: images any region of which was ever
    queried.
    """
    import great_expectations.expectations as gxe
    import pandas as pd

    root = Path(root)
    df = dataset_table(root, classes, split, set(queried_stems))
    if df.empty:
        raise ValidationFailed(str(root), ValidationReport("dataset", False, [f"{root}/images: no images"]))
    majority = Counter(df["channels"].dropna().astype(int)).most_common(1)
    channels = majority[0][0] if majority else 3
    checks = [
        Check(gxe.ExpectColumnValuesToMatchRegex(column="stem", regex=SAFE_STEM),
              lambda r: "file name not filesystem-safe (letters, digits, '.', '_', '-' only)"),
        Check(gxe.ExpectColumnValuesToBeUnique(column="stem"), lambda r: "another image has the same stem"),
        Check(gxe.ExpectColumnValuesToNotBeNull(column="image"),
              lambda r: f"no image in images/ for stem {r['stem']}"),
        Check(gxe.ExpectColumnValuesToNotBeNull(column="mask"), lambda r: f"no mask masks/{r['stem']}.png"),
        Check(gxe.ExpectColumnValuesToBeInSet(column="image_readable", value_set=[True]),
              lambda r: f"unreadable image (supported: {', '.join(IMAGE_EXTENSIONS)})"),
        Check(gxe.ExpectColumnValuesToBeInSet(column="mask_readable", value_set=[True]),
              lambda r: f"unreadable mask masks/{r['mask']} (masks are PNG)"),
        Check(gxe.ExpectColumnValuesToBeInSet(column="mask_channels", value_set=[1]),
              lambda r: f"mask masks/{r['mask']} has {num_text(r['mask_channels'])} channels, expected one"),
        Check(gxe.ExpectColumnPairValuesToBeEqual(column_A="image_size", column_B="mask_size",
                                                  ignore_row_if="either_value_is_missing"),
              lambda r: f"mask size {r['mask_size']} differs from the image's {r['image_size']}"),
        Check(gxe.ExpectColumnValuesToBeBetween(column="outside_classes", max_value=0),
              lambda r: f"{num_text(r['outside_classes'])} mask pixels outside the classes 0..{classes - 1}"),
        Check(gxe.ExpectColumnValuesToBeUnique(column="content_sha256"),
              lambda r: "duplicate: the same pixels as another image"),
        Check(gxe.ExpectColumnValuesToBeBetween(column="min_side", min_value=patch_side),
              lambda r: f"smaller side {num_text(r['min_side'])} px is below partition.side = {patch_side}"),
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
