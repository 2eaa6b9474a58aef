"""Label-batch suite: exactly the requested ids (none missing, none extra); plain file names (no path
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

from collections.abc import Iterable
from typing import TYPE_CHECKING

from activeseg.workspace.validation.suite import (Check, Entry, ValidationReport, decode_png, num_text,
                                                  pixels_outside_classes, png_header_size, run_suite, size_text)

if TYPE_CHECKING:
    import pandas as pd  # imported where a table is built: only a process that validates pays for it

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
               "size": None, "expected_size": size_text(requested[rid]) if rid in requested else None,
               "outside_classes": None, "foreground": None, "declared_size": None, "pixel_limit": limit,
               "too_large": None}
        declared = png_header_size(entry.data) if entry.data is not None else None
        if declared is not None:
            row["declared_size"] = size_text(declared[::-1])  # the header declares width, height
            row["too_large"] = declared[0] * declared[1] > limit
            if row["too_large"]:
                row["size"] = row["declared_size"]
        if entry.data is not None and not row["too_large"]:
            pixels = decode_png(entry.data, limit)
            row["readable"] = pixels is not None
            if pixels is not None:
                row["channels"] = 1 if pixels.ndim == 2 else pixels.shape[2]
                row["size"] = size_text(pixels.shape)
                if pixels.ndim == 2:
                    row["outside_classes"] = pixels_outside_classes(pixels, classes, binary_255=classes == 2)
                    row["foreground"] = int((pixels != 0).sum())
        rows.append(row)
    for rid in sorted(requested):
        if f"{rid}.png" not in names:
            rows.append({"name": f"{rid}.png", "kind": "missing", "expected_size": size_text(requested[rid])})
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
              lambda r: f"{num_text(r['bytes'])} bytes, over oracle.max_file_bytes = {max_bytes}"),
        Check(gxe.ExpectColumnValuesToBeInSet(column="too_large", value_set=[False]),
              lambda r: f"not decoded: its PNG header declares {r['declared_size']} pixels (height x width), more "
                        f"than the {num_text(r['pixel_limit'])} of the largest mask it may be (a decompression bomb?)"),
        Check(gxe.ExpectColumnValuesToBeInSet(column="readable", value_set=[True]), lambda r: "not a readable PNG"),
        Check(gxe.ExpectColumnValuesToBeInSet(column="channels", value_set=[1]),
              lambda r: f"{num_text(r['channels'])} channels, a mask has one"),
        Check(gxe.ExpectColumnPairValuesToBeEqual(column_A="size", column_B="expected_size",
                                                  ignore_row_if="either_value_is_missing"),
              lambda r: f"size {r['size']} (height x width), the region's in-image part is {r['expected_size']}"),
        Check(gxe.ExpectColumnValuesToBeBetween(column="outside_classes", max_value=0),
              lambda r: f"{num_text(r['outside_classes'])} pixels outside the classes ({class_text})"),
    ]
    if not allow_empty:
        checks.append(Check(gxe.ExpectColumnValuesToBeBetween(column="foreground", min_value=1),
                            lambda r: "all-empty mask, and oracle.allow_empty_masks is false"))
    batch = pd.DataFrame([{"name": "batch", "round_open": not already_accepted}])
    batch_checks = [Check(gxe.ExpectColumnValuesToBeInSet(column="round_open", value_set=[True]),
                          lambda r: f"round {round_number} already has an accepted batch; a second one is refused")]
    return run_suite("label_batch", {"files": (df, checks), "batch": (batch, batch_checks)})
