"""Great Expectations suites for the dataset and for every returned label batch, as plain code.

Each suite turns the files into facts, one pandas row per file (``name`` identifies the row), plus a
one-row table for facts about the whole batch or split, and checks them with GX expectations. A
failed expectation becomes one reason per offending row, naming the file and the expectation::

    syn-003_y0032_x0000_32x32.png: 3 channels, a mask has one [expect_column_values_to_be_in_set(channels)]

The GX validation results are kept as JSON (:attr:`ValidationReport.result`) in the quarantine report
or the round's record.

Dataset suite: every image has a mask and vice versa; files readable; names filesystem-safe; mask
sizes match their images; masks single-channel with values within the classes ({0, 255} counts as
binary, as in :func:`activeseg.core.data.read_mask`); no duplicate images (SHA-256 of the decoded pixels);
every image at least ``partition.side`` on its smaller side; the same number of channels everywhere;
with a frozen split: every image in it, the split file unchanged since it was frozen, and no image
outside the training pool ever queried.

Label-batch suite: exactly the requested ids (none missing, none extra); plain file names (no path
separator, ``.`` or ``..`` segment, absolute path, hidden file, space or other character than
letters, digits, ``.``, ``_``, ``-``) of plain files (symbolic links are never followed); at most
``oracle.max_file_bytes`` per file; no PNG whose header declares more pixels than its region's in-image
part (or, for a file no region asked for, than the largest one): such a file is never decoded, so a
decompression bomb costs nothing; each mask a readable PNG, single-channel, sized like the in-image part
of its region, values within the classes ({0, 255} allowed when binary); all-empty masks only when
``oracle.allow_empty_masks``; and no batch for a round already accepted. A palette PNG counts by its
indices (the class ids; the colours are ignored) and a 16-bit PNG by its values, as
:func:`activeseg.core.data.read_mask` reads them when the batch is taken in.
"""

from __future__ import annotations

import hashlib
import io
import struct
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from PIL import Image

from activeseg.core.data import IMAGE_EXTENSIONS, MAX_PIXELS, DatasetError, read_image

if TYPE_CHECKING:
    import pandas as pd  # imported where a table is built: only a process that validates pays for it

SAFE_STEM = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
RESULT_FORMAT = {"result_format": "COMPLETE", "unexpected_index_column_names": ["name"]}


class Entry(Protocol):
    """One entry of a label batch (see :class:`activeseg.workspace.exchange.BatchEntry`)."""

    name: str
    kind: str
    size: int
    data: bytes | None


@dataclass
class Check:
    """One expectation and how to word a row that fails it."""

    expectation: Any
    message: Callable[[dict], str]


@dataclass
class ValidationReport:
    suite: str
    success: bool
    reasons: list[str] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"suite": self.suite, "success": self.success, "reasons": self.reasons, "gx_result": self.result}


class ValidationFailed(ValueError):
    """Data failed a suite; the message lists every file and expectation that failed."""

    def __init__(self, what: str, report: ValidationReport):
        self.report = report
        shown = report.reasons[:50]
        more = f"\n  ... and {len(report.reasons) - 50} more" if len(report.reasons) > 50 else ""
        super().__init__(f"{what} failed validation ({report.suite}):\n  " + "\n  ".join(shown) + more)


_CONTEXT = None


def _context():
    """One ephemeral GX context per process, without progress bars."""
    global _CONTEXT
    if _CONTEXT is None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        _CONTEXT = gx.get_context(mode="ephemeral")
        _CONTEXT.variables.progress_bars = ProgressBarsConfig(globally=False)
        _CONTEXT.data_sources.add_pandas("activeseg")
    return _CONTEXT


def _validate(suite_name: str, table: str, df: pd.DataFrame, checks: list[Check]) -> tuple[list[str], dict]:
    import great_expectations as gx

    source = _context().data_sources.get("activeseg")
    asset_name = f"{suite_name}.{table}"
    try:
        asset = source.get_asset(asset_name)
    except LookupError:
        asset = source.add_dataframe_asset(asset_name)
        asset.add_batch_definition_whole_dataframe("all")
    batch = asset.get_batch_definition("all").get_batch(batch_parameters={"dataframe": df})
    suite = gx.ExpectationSuite(name=asset_name)
    for i, check in enumerate(checks):
        check.expectation.meta = {"check": i}
        suite.add_expectation(check.expectation)
    result = batch.validate(suite, result_format=RESULT_FORMAT).to_json_dict()
    by_name = df.drop_duplicates("name").set_index("name")
    reasons = []
    for item in result["results"]:
        if item["success"]:
            continue
        config = item["expectation_config"]
        check = checks[config["meta"]["check"]]
        kwargs = config["kwargs"]
        columns = kwargs.get("column") or f"{kwargs.get('column_A')}, {kwargs.get('column_B')}"
        label = f"[{config['type']}({columns})]"
        if item.get("exception_info", {}).get("raised_exception"):
            reasons.append(f"{table}: {item['exception_info']['exception_message']} {label}")
            continue
        for row in item["result"].get("unexpected_index_list") or []:
            full = {"name": row["name"], **by_name.loc[row["name"]].to_dict()}
            reasons.append(f"{row['name']}: {check.message(full)} {label}")
    return reasons, result


def run_suite(suite_name: str, tables: dict[str, tuple[pd.DataFrame, list[Check]]]) -> ValidationReport:
    """Validate each table with its checks; a report with every reason and the GX results by table."""
    report = ValidationReport(suite_name, True)
    for table, (df, checks) in tables.items():
        reasons, result = _validate(suite_name, table, df, checks)
        report.reasons += reasons
        report.result[table] = result
        report.success = report.success and result["success"]
    return report


def _num(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def pixels_outside_classes(mask: np.ndarray, classes: int, binary_255: bool) -> int:
    """Pixels of an (H, W) mask whose value is no class id; with ``binary_255`` a {0, 255} mask counts
    as binary and has none."""
    values = np.unique(mask)
    if binary_255 and set(values.tolist()) <= {0, 255}:
        return 0
    return int(((mask < 0) | (mask >= classes)).sum())


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) as the PNG's IHDR chunk declares them, read from the bytes without decoding;
    None when the bytes do not start like a PNG."""
    if data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR" or len(data) < 24:
        return None
    return struct.unpack(">II", data[16:24])


def decode_png(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray | None:
    """The pixel array of PNG bytes ((H, W) or (H, W, C)), None when not a readable PNG or when its
    header declares more than ``max_pixels`` pixels (then it is not decoded). Palette PNGs give their
    indices, 16-bit PNGs their values."""
    declared = png_header_size(data)
    if declared is None or declared[0] * declared[1] > max_pixels:
        return None
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format != "PNG":
                return None
            img.load()
            return np.asarray(img)
    except Exception:  # Pillow raises many kinds for broken files
        return None


def _size(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[0]}"


# -- label batches -------------------------------------------------------------------------------------

NAME_CHECKS = (
    (r"[/\\]", "path separator in the name"),
    (r"(?:^|[/\\])\.{1,2}(?:[/\\]|$)", "'.' or '..' path segment in the name"),
    (r"^(?:[/\\]|[A-Za-z]:)", "absolute path"),
    (r"(?:^|[/\\])\.(?!\.?(?:[/\\]|$))", "hidden file"),
    (r"[^A-Za-z0-9._/\\-]", "space or other character than letters, digits, '.', '_', '-' in the name"),
)


def label_batch_table(entries: Iterable[Entry], requested: dict[str, tuple[int, int]], classes: int) -> pd.DataFrame:
    """One row per entry and per requested id without an entry (kind ``missing``).

    ``requested`` maps region ids to the (h, w) of the region's in-image part. Entries without data
    (links, oversized files) are not decoded, nor is a PNG whose header declares more pixels than its
    region's in-image part (than the largest one for a file no region asked for): ``too_large``.
    """
    import pandas as pd

    rows, names = [], set()
    largest = max((h * w for h, w in requested.values()), default=0)
    for entry in entries:
        names.add(entry.name)
        rid = entry.name[:-4] if entry.name.endswith(".png") else None
        limit = requested[rid][0] * requested[rid][1] if rid in requested else largest
        row = {"name": entry.name, "kind": entry.kind, "bytes": entry.size, "readable": None, "channels": None,
               "size": None, "expected_size": _size(requested[rid]) if rid in requested else None,
               "outside_classes": None, "foreground": None, "declared_size": None, "pixel_limit": limit,
               "too_large": None}
        declared = png_header_size(entry.data) if entry.data is not None else None
        if declared is not None:
            row["declared_size"] = f"{declared[0]}x{declared[1]}"
            row["too_large"] = declared[0] * declared[1] > limit
            if row["too_large"]:
                row["size"] = row["declared_size"]
        if entry.data is not None and not row["too_large"]:
            pixels = decode_png(entry.data, limit)
            row["readable"] = pixels is not None
            if pixels is not None:
                row["channels"] = 1 if pixels.ndim == 2 else pixels.shape[2]
                row["size"] = _size(pixels.shape)
                if pixels.ndim == 2:
                    row["outside_classes"] = pixels_outside_classes(pixels, classes, binary_255=classes == 2)
                    row["foreground"] = int((pixels != 0).sum())
        rows.append(row)
    for rid in sorted(requested):
        if f"{rid}.png" not in names:
            rows.append({"name": f"{rid}.png", "kind": "missing", "expected_size": _size(requested[rid])})
    return pd.DataFrame(rows, columns=["name", "kind", "bytes", "readable", "channels", "size", "expected_size",
                                       "outside_classes", "foreground", "declared_size", "pixel_limit",
                                       "too_large"])


def validate_label_batch(entries: Iterable[Entry], requested: dict[str, tuple[int, int]], classes: int,
                         allow_empty: bool, max_bytes: int, round_number: int,
                         already_accepted: bool) -> ValidationReport:
    """The label-batch suite (see the module docstring) over one batch for one round's request."""
    import great_expectations.expectations as gxe
    import pandas as pd

    df = label_batch_table(entries, requested, classes)
    class_text = "0..1 or {0, 255}" if classes == 2 else f"0..{classes - 1}"
    checks = [
        Check(gxe.ExpectColumnValuesToNotBeInSet(column="kind", value_set=["missing"]),
              lambda r: "no mask uploaded for this requested region"),
        Check(gxe.ExpectColumnValuesToNotBeInSet(column="kind", value_set=["symlink", "other"]),
              lambda r: f"a {r['kind']}, not a plain file (never followed)"),
        Check(gxe.ExpectColumnValuesToBeInSet(column="name", value_set=sorted(f"{i}.png" for i in requested)),
              lambda r: "not a requested region id (expected <region id>.png)"),
        *(Check(gxe.ExpectColumnValuesToNotMatchRegex(column="name", regex=regex), lambda r, text=text: text)
          for regex, text in NAME_CHECKS),
        Check(gxe.ExpectColumnValuesToBeBetween(column="bytes", min_value=0, max_value=max_bytes),
              lambda r: f"{_num(r['bytes'])} bytes, over oracle.max_file_bytes = {max_bytes}"),
        Check(gxe.ExpectColumnValuesToBeInSet(column="too_large", value_set=[False]),
              lambda r: f"not decoded: its PNG header declares {r['declared_size']} pixels, more than the "
                        f"{_num(r['pixel_limit'])} of the largest mask it may be (a decompression bomb?)"),
        Check(gxe.ExpectColumnValuesToBeInSet(column="readable", value_set=[True]), lambda r: "not a readable PNG"),
        Check(gxe.ExpectColumnValuesToBeInSet(column="channels", value_set=[1]),
              lambda r: f"{_num(r['channels'])} channels, a mask has one"),
        Check(gxe.ExpectColumnPairValuesToBeEqual(column_A="size", column_B="expected_size",
                                                  ignore_row_if="either_value_is_missing"),
              lambda r: f"size {r['size']}, the region's in-image part is {r['expected_size']}"),
        Check(gxe.ExpectColumnValuesToBeBetween(column="outside_classes", max_value=0),
              lambda r: f"{_num(r['outside_classes'])} pixels outside the classes ({class_text})"),
    ]
    if not allow_empty:
        checks.append(Check(gxe.ExpectColumnValuesToBeBetween(column="foreground", min_value=1),
                            lambda r: "all-empty mask, and oracle.allow_empty_masks is false"))
    batch = pd.DataFrame([{"name": "batch", "round_open": not already_accepted}])
    batch_checks = [Check(gxe.ExpectColumnValuesToBeInSet(column="round_open", value_set=[True]),
                          lambda r: f"round {round_number} already has an accepted batch; a second one is refused")]
    return run_suite("label_batch", {"files": (df, checks), "batch": (batch, batch_checks)})


# -- datasets ------------------------------------------------------------------------------------------

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
    return {"image_readable": True, "image_size": _size(pixels.shape), "channels": pixels.shape[2],
            "min_side": min(pixels.shape[:2]), "content_sha256": digest}


def _mask_facts(path: Path, classes: int) -> dict[str, Any]:
    pixels = decode_png(path.read_bytes()) if path.suffix.lower() == ".png" else None
    if pixels is None:
        return {"mask_readable": False}
    facts = {"mask_readable": True, "mask_size": _size(pixels.shape),
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
              lambda r: f"mask masks/{r['mask']} has {_num(r['mask_channels'])} channels, expected one"),
        Check(gxe.ExpectColumnPairValuesToBeEqual(column_A="image_size", column_B="mask_size",
                                                  ignore_row_if="either_value_is_missing"),
              lambda r: f"mask size {r['mask_size']} differs from the image's {r['image_size']}"),
        Check(gxe.ExpectColumnValuesToBeBetween(column="outside_classes", max_value=0),
              lambda r: f"{_num(r['outside_classes'])} mask pixels outside the classes 0..{classes - 1}"),
        Check(gxe.ExpectColumnValuesToBeUnique(column="content_sha256"),
              lambda r: "duplicate: the same pixels as another image"),
        Check(gxe.ExpectColumnValuesToBeBetween(column="min_side", min_value=patch_side),
              lambda r: f"smaller side {_num(r['min_side'])} px is below partition.side = {patch_side}"),
        Check(gxe.ExpectColumnValuesToBeInSet(column="channels", value_set=[channels]),
              lambda r: f"{_num(r['channels'])} channels where the others have {channels}"),
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
