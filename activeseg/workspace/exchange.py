"""The label exchange through an object store: requests out, label batches in, bad batches quarantined.

Layout (see :mod:`activeseg.workspace.storage`)::

    requests/round-NNN/manifest.json          the request (written last: its presence means published)
    requests/round-NNN/<id>.png               the image around the region, with a context margin
    requests/round-NNN/<id>.preview.png       the same crop enlarged (>= 384 px long side) with the region outlined
    requests/round-NNN/INSTRUCTIONS.md        what to label, the classes, mask sizes, file names, how to hand in
    requests/round-NNN/manifest.schema.json   the manifest's JSON Schema (draft 2020-12)
    requests/round-NNN/<format>/...           an export for QuPath, CVAT or Label Studio (`activeseg labels export`)
    labels/round-NNN/<id>.png                 the upload folder: the annotator's mask for each requested region
    staged/round-NNN/<batch sha256>/batch.json, files/<id>.png
                                              a validated batch waiting for review: write-once, apart from the
                                              upload folder, so no later upload can change what is approved
    quarantine/round-NNN/<timestamp>/report.json, files/...   a rejected, replaced or refused batch

The manifest lists each region: ``id`` (filesystem-safe), ``stem``, ``box`` [y0, x0, y1, x1] (it may
reach past the image, which is mirror-padded there; half-open, image pixels), ``label_size`` [h, w] (the
in-image part of the box: the size of the mask to upload), ``cost`` (newly revealed pixels), ``score``, and
where its crop (``crop_box`` in image coordinates, ``region_in_crop`` in crop coordinates), preview (enlarged
``preview_scale`` times) and label go; beside them ``classes``, ``class_names`` and the keys of the
instructions and the schema (:mod:`activeseg.workspace.request_docs`).
The context margin is half the region's longer side on every side, clipped to the image.

A batch is read whole, as :class:`BatchEntry` items, from a local folder or from the store: links are
reported and never followed, and files over the size cap are not read. It is then validated whole
(:func:`activeseg.workspace.validation.labels.validate_label_batch`); a rejected batch is copied to the quarantine
with its report and removed from ``labels/round-NNN/``. A valid batch is copied to its staged place
(:func:`stage_batch`) and only then removed from the upload folder, object by object and only where the
object still holds the bytes that were staged (:func:`clear_upload`): a file uploaded meanwhile stays.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from activeseg.core.data import Dataset
from activeseg.core.partition import Region
from activeseg.core.util import round_name
from activeseg.workspace.request_docs import (INSTRUCTIONS, SCHEMA, default_class_names, instructions, manifest_schema,
                                              preview_scale)
from activeseg.workspace.storage import ObjectStore, StoreError, StoreUnavailable

MANIFEST = "manifest.json"
REPORT = "report.json"
STAGED_BATCH = "batch.json"
OUTLINE = (255, 255, 0)
NOT_KEPT = {"symlink": "a symbolic link, never followed", "other": "not a plain file"}


def round_prefix(area: str, round_number: int) -> str:
    """``requests``, ``labels``, ``staged`` or ``quarantine`` of one round: ``labels/round-007/``."""
    return f"{area}/{round_name(round_number)}/"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def png_bytes(array: np.ndarray, compress_level: int = 6) -> bytes:
    """PNG of an (H, W) or (H, W, 3) uint8 array; `compress_level` from 0 (none) to 9 (Pillow's default 6)."""
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG", compress_level=compress_level)
    return out.getvalue()


def mask_png(mask: np.ndarray, classes: int) -> bytes:
    """PNG of an (h, w) class-id mask in the dataset convention: {0, 255} when binary, else class ids."""
    return png_bytes((mask * 255 if classes == 2 else mask).astype(np.uint8))


def to_uint8(image: np.ndarray) -> np.ndarray:
    """(H, W, C) float in [0, 1] -> (H, W) or (H, W, 3) uint8."""
    pixels = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    return pixels[:, :, 0] if pixels.shape[2] == 1 else pixels


# -- requests ------------------------------------------------------------------------------------------

def context_box(region: Region, height: int, width: int) -> tuple[int, int, int, int]:
    """The in-image part of the region grown by half its longer side, clipped: (y0, x0, y1, x1)."""
    ys, xs = region.clipped(height, width)
    margin = max(region.y1 - region.y0, region.x1 - region.x0) // 2
    return (max(0, ys.start - margin), max(0, xs.start - margin),
            min(height, ys.stop + margin), min(width, xs.stop + margin))


def outlined(crop: np.ndarray, box: tuple[int, int, int, int], scale: int = 1) -> np.ndarray:
    """An RGB copy of a uint8 crop enlarged ``scale`` times (nearest neighbour) with the box (y0, x0, y1,
    x1 in crop pixels; end exclusive) outlined in yellow on its edge pixels, ``max(1, scale // 2)`` wide."""
    img = Image.fromarray(crop).convert("RGB")
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    y0, x0, y1, x1 = (v * scale for v in box)
    ImageDraw.Draw(img).rectangle([x0, y0, x1 - 1, y1 - 1], outline=OUTLINE, width=max(1, scale // 2))
    return np.asarray(img)


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


# -- label batches -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BatchEntry:
    """One thing found in a batch: ``name`` relative to the batch folder (``/``-separated, as found),
    ``kind`` (``file``, ``symlink`` or ``other``), ``size`` in bytes, and ``data`` when it is a plain file
    within the size cap (else None)."""

    name: str
    kind: str
    size: int
    data: bytes | None = None

    @property
    def sha256(self) -> str | None:
        return sha256_bytes(self.data) if self.data is not None else None


def read_folder_batch(folder: str | Path, max_bytes: int) -> list[BatchEntry]:
    """Every entry below ``folder``, recursively, without following links."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: label folder not found")
    entries = []
    for parent, dirs, files in os.walk(folder, followlinks=False):
        links = [d for d in dirs if os.path.islink(os.path.join(parent, d))]
        for name in sorted(files) + sorted(links):
            path = Path(parent) / name
            stat = path.lstat()
            kind = "symlink" if path.is_symlink() else "file" if path.is_file() else "other"
            data = path.read_bytes() if kind == "file" and stat.st_size <= max_bytes else None
            entries.append(BatchEntry(path.relative_to(folder).as_posix(), kind, stat.st_size, data))
    return sorted(entries, key=lambda e: e.name)


def read_path_batch(path: str | Path, max_bytes: int) -> list[BatchEntry]:
    """What a path holds, as batch entries: a folder's entries (:func:`read_folder_batch`), else the
    path itself as one entry named by its file name (a link is reported, never followed); nothing when
    the path does not exist."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        return read_folder_batch(path, max_bytes)
    if not path.is_symlink() and not path.exists():
        return []
    stat = path.lstat()
    kind = "symlink" if path.is_symlink() else "file" if path.is_file() else "other"
    data = path.read_bytes() if kind == "file" and stat.st_size <= max_bytes else None
    return [BatchEntry(path.name, kind, stat.st_size, data)]


def read_store_batch(store: ObjectStore, round_number: int, max_bytes: int) -> list[BatchEntry]:
    """Everything under ``labels/round-NNN/`` (the upload folder) in the store."""
    return read_store_prefix(store, round_prefix("labels", round_number), max_bytes)


def read_store_prefix(store: ObjectStore, prefix: str, max_bytes: int) -> list[BatchEntry]:
    """Everything under ``prefix`` in the store, named relative to it."""
    entries = []
    for info in store.list(prefix):
        data = None
        if not info.symlink and info.size <= max_bytes:
            try:
                data = store.get_bytes(info.key)
            except StoreUnavailable:  # an outage is not a bad name: the caller fails and tries again
                raise
            except StoreError:  # e.g. a name the S3 client refuses; the name checks report it
                data = None
        entries.append(BatchEntry(info.key[len(prefix):], "symlink" if info.symlink else "file", info.size, data))
    return entries


def batch_sha256(entries: list[BatchEntry]) -> str:
    """Content hash of a batch: SHA-256 over its sorted (name, kind, size, SHA-256 of the bytes)."""
    listing = [[e.name, e.kind, e.size, e.sha256] for e in sorted(entries, key=lambda e: e.name)]
    return sha256_bytes(json.dumps(listing, separators=(",", ":")).encode())


def staged_prefix(round_number: int, digest: str) -> str:
    """Where a staged batch lies: ``staged/round-NNN/<batch sha256>/``."""
    return f"{round_prefix('staged', round_number)}{digest}/"


def stage_batch(store: ObjectStore, round_number: int, entries: list[BatchEntry], digest: str,
                meta: dict[str, Any]) -> str:
    """Copy a validated batch (plain files only) to ``staged/round-NNN/<digest>/files/`` with
    ``batch.json`` (``meta``, the batch hash and each file's SHA-256) written last; returns the prefix.

    Write-once: when that place already holds the batch intact (a retried staging), nothing is written.
    """
    prefix = staged_prefix(round_number, digest)
    if batch_sha256(read_staged_batch(store, round_number, digest, max(e.size for e in entries))) == digest:
        return prefix
    for entry in entries:
        store.put_bytes(f"{prefix}files/{entry.name}", entry.data)
    listing = {"round": round_number, "batch_sha256": digest, **meta, "files": {e.name: e.sha256 for e in entries}}
    store.put_bytes(prefix + STAGED_BATCH, json.dumps(listing, indent=1).encode())
    return prefix


def read_staged_batch(store: ObjectStore, round_number: int, digest: str, max_bytes: int) -> list[BatchEntry]:
    """The files of a staged batch as they are in the store now (compare with ``digest``)."""
    return read_store_prefix(store, staged_prefix(round_number, digest) + "files/", max_bytes)


def changed_files(store: ObjectStore, round_number: int, digest: str, found: list[BatchEntry]) -> list[str]:
    """What differs between a staged batch's ``batch.json`` and the files ``found`` in its place, in words
    ("a.png changed", "b.png missing", "c.png added", or that ``batch.json`` itself is gone)."""
    key = staged_prefix(round_number, digest) + STAGED_BATCH
    if not store.exists(key):
        return [f"{key} is missing"]
    recorded = json.loads(store.get_bytes(key))["files"]
    now = {e.name: e.sha256 for e in found}
    return ([f"{name} changed" for name in sorted(recorded) if name in now and now[name] != recorded[name]]
            + [f"{name} missing" for name in sorted(recorded) if name not in now]
            + [f"{name} added" for name in sorted(now) if name not in recorded])


def clear_staged(store: ObjectStore, round_number: int, digest: str) -> None:
    """Remove a batch's staged place (after it went to quarantine or into the workspace)."""
    prefix = staged_prefix(round_number, digest)
    for info in store.list(prefix):
        store.delete(info.key)


def clear_upload(store: ObjectStore, round_number: int, entries: list[BatchEntry]) -> list[str]:
    """Remove the staged ``entries`` from the upload folder ``labels/round-NNN/``, each only while its object
    still holds the same bytes; returns the names left because they changed since they were read."""
    prefix, left = round_prefix("labels", round_number), []
    for entry in entries:
        key = prefix + entry.name
        if store.exists(key) and sha256_bytes(store.get_bytes(key)) == entry.sha256:
            store.delete(key)
        elif store.exists(key):
            left.append(entry.name)
    return left


def timestamp() -> str:
    """A UTC time usable in a key: ``20250131T120000.123456Z``."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


def quarantine_name(name: str, index: int) -> str:
    """A plain key segment for any entry name, unique through the index."""
    return f"{index:04d}-" + (re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "entry")


def quarantine(store: ObjectStore, round_number: int, entries: list[BatchEntry], report: dict[str, Any],
               source: str | None) -> str:
    """Keep a rejected batch under ``quarantine/round-NNN/<timestamp>/`` with ``report.json``; returns that prefix.

    Files are kept under ``files/`` with plain names (the report maps the original names). ``source``:
    the store prefix the batch was read from (the upload folder ``labels/round-NNN/`` or a staged place),
    from which it is then removed; None for a local folder, which is left as it is. An entry that cannot
    be kept (a link, which is never followed; a file over the size cap of a local folder, which stays in
    that folder; an object the S3 client cannot read, such as a name with a ``.`` or ``..`` segment) is
    mapped to None in ``files`` and its reason is in ``not_kept``; an object that cannot be removed from
    ``source`` is listed with the error in ``not_removed`` (the report is written again then).
    """
    prefix = round_prefix("quarantine", round_number) + timestamp() + "/"
    kept: dict[str, str | None] = {}
    not_kept: dict[str, str] = {}
    for index, entry in enumerate(entries):
        key = f"{prefix}files/{quarantine_name(entry.name, index)}"
        data, why = entry.data, NOT_KEPT.get(entry.kind, "over the size cap; left in the submitted folder")
        if data is None and source is not None and entry.kind == "file":
            try:
                data = store.get_bytes(source + entry.name)
            except StoreUnavailable:
                raise
            except StoreError as exc:
                why = f"the object store client cannot read this name, so it is not kept ({exc})"
        if data is not None:
            store.put_bytes(key, data)
        else:
            not_kept[entry.name] = why
        kept[entry.name] = key if data is not None else None
    full = {**report, "round": round_number, "files": kept, "not_kept": not_kept}
    store.put_bytes(prefix + REPORT, json.dumps(full, indent=1, default=str).encode())
    if source is not None:
        not_removed = remove_batch(store, source, entries)
        if not_removed:
            full["not_removed"] = not_removed
            store.put_bytes(prefix + REPORT, json.dumps(full, indent=1, default=str).encode())
    return prefix


def remove_batch(store: ObjectStore, source: str, entries: list[BatchEntry]) -> dict[str, str]:
    """Delete every entry under ``source``; returns {name: error} for those that could not be deleted."""
    failed = {}
    for entry in entries:
        try:
            store.delete(source + entry.name)
        except StoreUnavailable:
            raise
        except StoreError as exc:
            failed[entry.name] = str(exc)
    return failed
