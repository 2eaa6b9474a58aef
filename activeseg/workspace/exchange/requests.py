"""A round's label request in the object store (:mod:`.layout`): each region's crop and preview, the
instructions, the schema, then the manifest.

The manifest lists each region: ``id`` (filesystem-safe), ``stem``, ``box`` [y0, x0, y1, x1] (it may
reach past the image, which is mirror-padded there; half-open, image pixels), ``label_size`` [h, w] (the
in-image part of the box: the size of the mask to upload), ``cost`` (newly revealed pixels), ``score``, and
where its crop (``crop_box`` in image coordinates, ``region_in_crop`` in crop coordinates), preview (enlarged
``preview_scale`` times) and label go; beside them ``classes``, ``class_names`` and the keys of the
instructions and the schema (:mod:`.request_docs`).
The context margin is half the region's longer side on every side, clipped to the image.
"""

from __future__ import annotations

import json
from typing import Any

from activeseg.core.data import Dataset
from activeseg.core.partition import Region
from activeseg.workspace.exchange.images import outlined, png_bytes, to_uint8
from activeseg.workspace.exchange.layout import MANIFEST, round_prefix
from activeseg.workspace.exchange.request_docs import (INSTRUCTIONS, SCHEMA, default_class_names, instructions,
                                                       manifest_schema, preview_scale)
from activeseg.workspace.storage import ObjectStore


def context_box(region: Region, height: int, width: int) -> tuple[int, int, int, int]:
    """The in-image part of the region grown by half its longer side, clipped: (y0, x0, y1, x1)."""
    ys, xs = region.clipped(height, width)
    margin = max(region.y1 - region.y0, region.x1 - region.x0) // 2
    return (max(0, ys.start - margin), max(0, xs.start - margin),
            min(height, ys.stop + margin), min(width, xs.stop + margin))


def publish_request(store: ObjectStore, round_number: int, regions: list[dict[str, Any]], dataset: Dataset,
                    meta: dict[str, Any]) -> dict[str, Any]:
    """Write every region's crop and preview, ``INSTRUCTIONS.md`` and ``manifest.schema.json``, then the
    manifest; returns the manifest.

    ``regions``: dicts with ``id``, ``stem``, ``box``, ``cost``, ``score``. ``meta`` goes into the
    manifest as it is (round, strategy, ``classes`` (default: the dataset's), ...). Publishing again
    overwrites the same objects with the same bytes.
    """
    prefix = round_prefix("requests", round_number)
    listed = []
    for item in regions:
        region = Region.from_dict(item)
        sample = dataset.samples[region.stem]
        ys, xs = region.clipped(sample.height, sample.width)
        cy0, cx0, cy1, cx1 = context_box(region, sample.height, sample.width)
        crop = to_uint8(dataset.read_box(region.stem, (cy0, cx0, cy1, cx1)))
        inner = (ys.start - cy0, xs.start - cx0, ys.stop - cy0, xs.stop - cx0)
        store.put_bytes(f"{prefix}{region.id}.png", png_bytes(crop))
        scale = preview_scale(*crop.shape[:2])
        store.put_bytes(f"{prefix}{region.id}.preview.png", png_bytes(outlined(crop, inner, scale)))
        listed.append({"id": region.id, "stem": region.stem, "box": list(item["box"]),
                       "label_size": [ys.stop - ys.start, xs.stop - xs.start], "cost": item["cost"],
                       "score": item["score"], "crop": f"{prefix}{region.id}.png", "crop_box": [cy0, cx0, cy1, cx1],
                       "region_in_crop": list(inner), "preview": f"{prefix}{region.id}.preview.png",
                       "preview_scale": scale, "label": f"{round_prefix('labels', round_number)}{region.id}.png"})
    classes = meta.get("classes", dataset.classes)
    manifest = {**meta, "round": round_number, "classes": classes, "class_names": list(default_class_names(classes)),
                "instructions": prefix + INSTRUCTIONS, "schema": prefix + SCHEMA, "regions": listed}
    store.put_bytes(prefix + SCHEMA, json.dumps(manifest_schema(), indent=1).encode())
    store.put_bytes(prefix + INSTRUCTIONS, instructions(manifest, store.url).encode())
    store.put_bytes(prefix + MANIFEST, json.dumps(manifest, indent=1).encode())
    return manifest


def read_manifest(store: ObjectStore, round_number: int) -> dict[str, Any] | None:
    key = round_prefix("requests", round_number) + MANIFEST
    return json.loads(store.get_bytes(key)) if store.exists(key) else None
