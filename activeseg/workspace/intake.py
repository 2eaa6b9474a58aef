"""Label intake: a batch is submitted or ingested, validated whole, then accepted (written to labels/,
tracked by DVC, pushed, committed, the known masks updated) or quarantined with its reasons."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from activeseg.core.labels import LabelState
from activeseg.core.util import round_name, sha256_file, write_json
from activeseg.loop.oracle import SIMULATED, ground_truth
from activeseg.workspace.base import WorkspaceCore
from activeseg.workspace.errors import BatchRejected, WorkspaceError
from activeseg.workspace.exchange import (BatchEntry, batch_sha256, mask_png, quarantine, read_folder_batch,
                                          read_store_batch, round_prefix, upload_batch)
from activeseg.workspace.records import LabelsAccepted, RoundRecord
from activeseg.workspace.state import save_state
from activeseg.workspace.validation import ValidationReport, validate_label_batch


def _require_request(record: RoundRecord) -> None:
    """Labels are taken in only for a round that published a label request."""
    if record.queried is None:
        raise WorkspaceError(f"round {record.round}: no label request was published yet; start the round with "
                             "`activeseg server start`, `activeseg worker --background`, `activeseg round start`")


def ingest(ws: WorkspaceCore, round_number: int | None = None, annotator: str | None = None,
           source: Path | None = None) -> LabelsAccepted:
    """Take a label batch in, from ``source`` (a local folder) or else from ``labels/round-NNN/`` in
    the store. The whole batch is validated first. Accepted: written to labels/, tracked by DVC,
    pushed, committed, the known masks updated. Otherwise it is quarantined, the ledger records the
    rejection, nothing is applied, and :class:`BatchRejected` is raised with the reasons.
    """
    record = ws.record(ws.resolve(round_number))
    _require_request(record)
    n, accepted = record.round, record.labels_accepted
    cap = ws.cfg.oracle.max_file_bytes
    entries = read_folder_batch(source, cap) if source is not None else read_store_batch(ws.store, n, cap)
    if not entries:
        if accepted and source is None:
            return accepted
        where = source if source is not None else f"{ws.store.url}/{round_prefix('labels', n)}"
        raise WorkspaceError(f"round {n}: no label batch in {where}")
    digest = batch_sha256(entries)
    if accepted and accepted.batch_sha256 == digest:
        return accepted
    annotator = annotator or "unknown"
    ws.ledger.append("labels_received", n, annotator, {
        "annotator": annotator, "batch_sha256": digest, "files": len(entries),
        "source": "folder" if source is not None else "store"}, once_key=digest)
    report = validate_label_batch(entries, _label_sizes(ws, record), ws.cfg.data.classes,
                                  ws.cfg.oracle.allow_empty_masks, cap, n, already_accepted=accepted is not None)
    if not report.success:
        prefix = _quarantine(ws, n, entries, digest, annotator, report.reasons, "validation", source is None,
                             report.to_dict())
        raise BatchRejected(n, report.reasons, f"{ws.store.url}/{prefix}")
    return _accept(ws, record, entries, digest, annotator, report, uploaded=source is None)


def submit(ws: WorkspaceCore, round_number: int | None, folder: str | Path, annotator: str) -> LabelsAccepted:
    """Hand in a folder of masks as ``annotator``: validated whole, then uploaded to
    ``labels/round-NNN/`` and ingested (or quarantined with :class:`BatchRejected`)."""
    if not annotator:
        raise WorkspaceError("an annotator name is required")
    return ingest(ws, round_number, annotator, source=Path(folder))


def simulate_labels(ws: WorkspaceCore, round_number: int | None = None) -> LabelsAccepted:
    """Answer the round's request from the ground truth as ``simulated-oracle``, through :func:`submit`."""
    record = ws.record(ws.resolve(round_number))
    if record.labels_accepted is not None:
        return record.labels_accepted
    _require_request(record)
    (ws.root / "tmp").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ws.root / "tmp") as folder:
        for item in record.queried.regions:
            mask = ground_truth(ws.dataset, item.region())
            (Path(folder) / f"{item.id}.png").write_bytes(mask_png(mask, ws.cfg.data.classes))
        return submit(ws, record.round, folder, SIMULATED)


def reject(ws: WorkspaceCore, round_number: int | None, by: str, reason: str) -> dict[str, Any]:
    """Send the batch waiting in ``labels/round-NNN/`` (not yet accepted) to quarantine with the
    reason; the request stays open."""
    n = ws.resolve(round_number)
    accepted = ws.record(n).labels_accepted
    if accepted is not None:
        raise WorkspaceError(f"round {n}: batch {accepted.batch_sha256[:12]} was already accepted; there is "
                             "nothing to reject")
    entries = read_store_batch(ws.store, n, ws.cfg.oracle.max_file_bytes)
    reasons = [f"rejected by {by}: {reason}"]
    if not entries:
        done = [e for e in ws.ledger.events(type="batch_rejected", round=n) if e.data["reasons"] == reasons]
        if done:
            return {"round": n, "batch_sha256": done[-1].data["batch_sha256"], "by": by, "reason": reason,
                    "quarantine": f"{ws.store.url}/{done[-1].data['quarantine']}"}
        where = f"{ws.store.url}/{round_prefix('labels', n)}"
        raise WorkspaceError(f"round {n}: no uploaded batch in {where} to reject")
    digest = batch_sha256(entries)
    prefix = _quarantine(ws, n, entries, digest, None, reasons, by, True, {"reason": reason})
    return {"round": n, "batch_sha256": digest, "by": by, "reason": reason, "quarantine": f"{ws.store.url}/{prefix}"}


def _label_sizes(ws: WorkspaceCore, record: RoundRecord) -> dict[str, tuple[int, int]]:
    """Requested id -> (h, w) of the region's in-image part: the size of the mask to upload."""
    sizes = {}
    for item in record.requested():
        region = item.region()
        sample = ws.dataset.samples[region.stem]
        ys, xs = region.clipped(sample.height, sample.width)
        sizes[region.id] = (ys.stop - ys.start, xs.stop - xs.start)
    return sizes


def _quarantine(ws: WorkspaceCore, n: int, entries: list[BatchEntry], digest: str, annotator: str | None,
                reasons: list[str], by: str, from_store: bool, extra: dict[str, Any]) -> str:
    """Move a batch to quarantine with its report, restore an accepted batch it displaced, and
    record the rejection; returns the quarantine prefix."""
    prefix = quarantine(ws.store, n, entries, {"annotator": annotator, "batch_sha256": digest,
                                               "rejected_by": by, "reasons": reasons, **extra}, from_store)
    if from_store and ws.record(n).labels_accepted:  # a second batch for an accepted round: it goes back
        folder = ws.root / "labels" / round_name(n)
        upload_batch(ws.store, n, [BatchEntry(p.name, "file", p.stat().st_size, p.read_bytes())
                                   for p in sorted(folder.glob("*.png"))])
    ws.ledger.append("batch_rejected", n, by, {"annotator": annotator, "batch_sha256": digest,
                                               "reasons": reasons, "quarantine": prefix, "by": by})
    return prefix


def _accept(ws: WorkspaceCore, record: RoundRecord, entries: list[BatchEntry], digest: str, annotator: str,
            report: ValidationReport, uploaded: bool) -> LabelsAccepted:
    n = record.round
    folder = ws.root / "labels" / round_name(n)
    staging = ws.root / "tmp" / f"labels-{round_name(n)}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for entry in entries:
        (staging / entry.name).write_bytes(entry.data)
    shutil.rmtree(folder, ignore_errors=True)
    staging.replace(folder)
    if not uploaded:
        upload_batch(ws.store, n, entries)
    write_json(ws.root / "rounds" / round_name(n) / "labels-validation.json", report.to_dict())
    state = save_state(ws, ws.records.accepted() + [(n, annotator)])
    record.labels_accepted = commit_labels(ws, record, annotator, digest, state)
    ws.records.save(record)
    return record.labels_accepted


def commit_labels(ws: WorkspaceCore, record: RoundRecord, annotator: str, digest: str | None,
                  state: LabelState) -> LabelsAccepted:
    """Track, push and commit a round's label files (and pseudo-labels); ledger labels_committed.
    Round 0 (``init``) only records them: init tracks and commits them itself."""
    n, regions = record.round, record.requested()
    targets = [f"labels/{round_name(n)}"]
    if record.queried is not None and record.queried.pseudo is not None:
        targets.append(record.queried.pseudo.file)
    if n > 0:
        ws.dvc("add", "-q", *targets)
        ws.dvc("push", "-q", *targets)
        ws.ledger.export_jsonl(ws.root / "ledger.jsonl")
        ws.vcs.commit(f"round {n}: labels from {annotator} ({len(regions)} masks, batch {digest[:12]})")
    commit = ws.git("log", "-1", "--format=%H", "--", f"{targets[0]}.dvc").strip()
    files = {f"{targets[0]}/{r.id}.png": sha256_file(ws.root / targets[0] / f"{r.id}.png") for r in regions}
    hashes = {t: yaml.safe_load((ws.root / f"{t}.dvc").read_text())["outs"][0]["md5"] for t in targets}
    revealed = sum(h["cost"] for h in state.history if h["round"] == n)
    event = ws.ledger.append("labels_committed", n, annotator, {
        "annotator": annotator, "regions": [r.id for r in regions], "files": files, "dvc": hashes,
        "commit": commit, "batch_sha256": digest, "revealed_pixels": revealed}, once_key=digest or "initial")
    return LabelsAccepted(round=n, annotator=annotator, batch_sha256=digest, files=len(files), commit=commit,
                          revealed_pixels=revealed, known_pixel_fraction=state.revealed_fraction(), time=event.time)
