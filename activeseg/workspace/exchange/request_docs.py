"""The documents of a published label request: ``INSTRUCTIONS.md`` for the annotator and
``manifest.schema.json``, the JSON Schema (draft 2020-12) of ``manifest.json``; and the class names.

Both are written beside the manifest by :func:`activeseg.workspace.exchange.requests.publish_request` (before
it: the manifest's presence means the request is published).
"""

from __future__ import annotations

import math
from typing import Any

from activeseg.core.util import round_name

INSTRUCTIONS = "INSTRUCTIONS.md"
SCHEMA = "manifest.schema.json"
SCHEMA_ID = "https://activeseg.local/schemas/label-request-manifest.schema.json"
PREVIEW_LONG_SIDE = 384
"""Previews are enlarged (nearest neighbour, by a whole factor) to at least this many pixels on the long side."""


def default_class_names(classes: int) -> tuple[str, ...]:
    """Class names when the campaign names none: ``background`` and ``foreground`` for two classes,
    else ``background``, ``class 1``, ``class 2``, ..."""
    if classes == 2:
        return "background", "foreground"
    return ("background",) + tuple(f"class {i}" for i in range(1, classes))


def preview_scale(height: int, width: int) -> int:
    """The whole enlargement factor that brings a crop's long side to at least :data:`PREVIEW_LONG_SIDE`."""
    return max(1, math.ceil(PREVIEW_LONG_SIDE / max(height, width, 1)))


def mask_values(classes: int) -> list[tuple[str, str]]:
    """(pixel value in the mask PNG, class name) for each class."""
    names = default_class_names(classes)
    if classes == 2:
        return [("0", names[0]), ("255 (1 is accepted too)", names[1])]
    return [(str(i), name) for i, name in enumerate(names)]


def _box(what: str) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "integer"}, "minItems": 4, "maxItems": 4,
            "description": f"{what}: [y0, x0, y1, x1] (rows then columns), half-open: rows y0 <= y < y1 and "
                           "columns x0 <= x < x1"}


def _key(what: str) -> dict[str, Any]:
    return {"type": "string", "description": f"object-store key (relative to the store root) of {what}"}


def manifest_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a request's ``manifest.json``."""
    size = {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 2, "maxItems": 2}
    region = {
        "type": "object",
        "required": ["id", "stem", "box", "label_size", "cost", "score", "crop", "crop_box", "region_in_crop",
                     "preview", "preview_scale", "label"],
        "properties": {
            "id": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*$",
                   "description": "region id; the mask to hand in is named <id>.png"},
            "stem": {"type": "string", "description": "the image (file stem in the dataset)"},
            "box": _box("the region in image pixels; it may reach past the image (mirror-padded there), only "
                        "its in-image part is labeled"),
            "label_size": {**size, "description": "[height, width] of the mask to hand in: the region's in-image "
                                                  "part, not the crop"},
            "cost": {"type": ["integer", "null"], "minimum": 0,
                     "description": "pixels this region newly reveals (not labeled before)"},
            "score": {"type": ["number", "null"],
                      "description": "the query strategy's score (uncertainty); higher was asked first; null "
                                     "where the request shows none"},
            "crop": _key("the image around the region (PNG), with a context margin of half the region's longer "
                         "side, clipped to the image"),
            "crop_box": _box("the crop in image pixels"),
            "region_in_crop": _box("the region's in-image part inside the crop, in crop pixels"),
            "preview": _key("the crop enlarged by preview_scale (nearest neighbour) with the region outlined"),
            "preview_scale": {"type": "integer", "minimum": 1,
                              "description": "how many preview pixels one crop pixel is, on each axis"},
            "label": _key("where the mask goes: labels/round-NNN/<id>.png"),
        },
        "additionalProperties": False,
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "activeseg label request manifest",
        "description": "One round's label request. Coordinates are image pixels, origin at the top-left, boxes "
                       "[y0, x0, y1, x1] half-open (end excluded). Written last: its presence means published.",
        "type": "object",
        "required": ["round", "regions", "classes", "class_names", "instructions", "schema"],
        "properties": {
            "round": {"type": "integer", "minimum": 0},
            "strategy": {"type": "string", "description": "the query strategy that chose the regions"},
            "created": {"type": "string", "description": "when the selection was made (UTC)"},
            "checkpoint_sha256": {"type": "string", "description": "the model the regions were chosen with"},
            "classes": {"type": "integer", "minimum": 2, "description": "number of classes, background included"},
            "class_names": {"type": "array", "items": {"type": "string"}, "minItems": 2,
                            "description": "class_names[i] names class id i (0: background)"},
            "masks": {"type": "string", "description": "the mask convention in words"},
            "instructions": _key(INSTRUCTIONS),
            "schema": _key("this schema"),
            "regions": {"type": "array", "items": region},
        },
        "additionalProperties": True,
    }


def instructions(manifest: dict[str, Any], store_url: str) -> str:
    """The annotator's ``INSTRUCTIONS.md`` for a request (the manifest as it will be written)."""
    n, regions, classes = manifest["round"], manifest["regions"], manifest["classes"]
    rnd = round_name(n)
    ranked = any(r["score"] is not None for r in regions)
    lines = [
        f"# Label request: round {n}", "",
        f"Label the {len(regions)} regions listed in `manifest.json` "
        + ("(in request order, the most informative first)" if ranked else "(in the order of their ids)")
        + ". For each region:", "",
        "- `<id>.png` is the image around the region, with a context margin of half the region's longer side "
        "(clipped to the image);",
        "- `<id>.preview.png` is that crop enlarged (nearest neighbour, `preview_scale` times) with the region "
        "outlined in yellow;",
        "- label **only the region**: the mask covers the region's in-image part, `label_size` "
        "([height, width]), **not the whole crop**. The region lies at `region_in_crop` inside the crop.", "",
        "## Classes", "", "| pixel value in the mask | class |", "|---|---|",
        *[f"| {value} | {name} |" for value, name in mask_values(classes)], "",
        "## Files", "",
        "One single-channel (grayscale, 8-bit) PNG per region, named `<region id>.png`, exactly `label_size` "
        "pixels: every region must be answered (an empty region is all background).", "",
        "| region | mask size (height x width) |", "|---|---|",
        *[f"| `{r['id']}.png` | {r['label_size'][0]} x {r['label_size'][1]} |" for r in regions], "",
        "## Handing in", "",
        f"- `activeseg labels submit DIR --annotator NAME --round {n}` (DIR holds the PNGs), or",
        f"- upload the PNGs to `{store_url}/labels/{rnd}/` (then `activeseg labels ingest --round {n}`), or",
        f"- label in QuPath, CVAT or Label Studio: `activeseg labels export --round {n} --format "
        "qupath|cvat|labelstudio --out DIR` writes the request with the model's prediction to correct; hand the "
        f"tool's export back with `activeseg labels import PATH --round {n} --format ...`.", "",
        f"The whole batch is validated; a bad one is kept in `{store_url}/quarantine/{rnd}/` with its reasons and "
        "nothing of it is applied.", "",
        "## Coordinates", "",
        f"`manifest.json` is described by `{SCHEMA}` (JSON Schema, draft 2020-12). Boxes (`box`, `crop_box`, "
        "`region_in_crop`) are `[y0, x0, y1, x1]`: rows then columns, in pixels with the origin at the top-left, "
        "half-open (row y1 and column x1 are not included). `box` may reach past the image; only its in-image "
        "part is labeled.", "",
    ]
    return "\n".join(lines)
