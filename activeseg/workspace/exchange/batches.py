"""Label batches in the label exchange (:mod:`.layout`): read whole, hashed, staged, quarantined.

A batch is read whole, as :class:`BatchEntry` items, from a local folder or from the store: links are
reported and never followed, and files over the size cap are not read. It is then validated whole
(:func:`activeseg.workspace.validation.labels.validate_label_batch`); a rejected batch is copied to the quarantine
with its report and removed from ``labels/round-NNN/``. A valid batch is copied to its staged place
(:func:`stage_batch`) and only then removed from the upload folder, object by object and only where the
object still holds the bytes that were staged (:func:`clear_upload`): a file uploaded meanwhile stays.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from activeseg.workspace.exchange.layout import REPORT, STAGED_BATCH, round_prefix, staged_prefix, timestamp
from activeseg.workspace.storage import ObjectStore, StoreError, StoreUnavailable


NOT_KEPT = {"symlink": "a symbolic link, never followed", "other": "not a plain file"}


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


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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
