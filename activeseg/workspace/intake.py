"""Label intake: a batch is submitted or ingested and validated whole; a valid one is *staged*
(uploaded to ``labels/round-NNN/`` in the store, recorded, waiting for a reviewer), a bad one is
quarantined with its reasons. Approving the staged batch takes it in (written to labels/, tracked by
DVC, pushed, committed, the known masks updated); rejecting it quarantines it with the reviewer's
reason and the round waits for another batch.

Ledger: ``labels_received`` (a batch arrived, by the annotator), then ``batch_rejected`` (validation)
or ``labels_submitted`` (staged, by the annotator); then ``batch_rejected`` (by the reviewer) or
``labels_approved`` (by the approver) and ``labels_committed``. One batch at a time: a second
submission while one is staged is refused unless it replaces it (``replace``, recorded).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from filelock import FileLock

from activeseg.core.labels import LabelState
from activeseg.core.util import round_name, sha256_file, write_json
from activeseg.loop.oracle import SIMULATED, ground_truth
from activeseg.workspace.base import WorkspaceCore
from activeseg.workspace.errors import BatchRejected, WorkspaceError
from activeseg.workspace.exchange import (BatchEntry, batch_sha256, mask_png, quarantine, read_folder_batch,
                                          read_store_batch, round_prefix, upload_batch)
from activeseg.workspace.records import LabelsAccepted, RoundRecord, Staged
from activeseg.workspace.state import save_state
from activeseg.workspace.validation import ValidationReport, validate_label_batch


def _require_request(record: RoundRecord) -> None:
    """Labels are taken in only for a round that published a label request."""
    if record.queried is None:
        raise WorkspaceError(f"round {record.round}: no label request was published yet; start the round with "
                             "`activeseg server start`, `activeseg worker --background`, `activeseg round start`")


@contextmanager
def _intake_lock(ws: WorkspaceCore, round_number: int) -> Iterator[None]:
    """One submission, approval or rejection of a round's labels at a time (across processes)."""
    (ws.root / "tmp").mkdir(exist_ok=True)
    with FileLock(ws.root / "tmp" / f"labels-{round_name(round_number)}.lock"):
        yield


def ingest(ws: WorkspaceCore, round_number: int | None = None, annotator: str | None = None,
           source: Path | None = None, replace: bool = False,
           details: dict[str, Any] | None = None) -> Staged | LabelsAccepted:
    """Stage a label batch, from ``source`` (a local folder) or else from ``labels/round-NNN/`` in the
    store. The whole batch is validated first. Valid: uploaded (a folder) and staged for approval
    (:func:`approve`); returned as :class:`Staged`. Otherwise it is quarantined, the ledger records the
    rejection, nothing is applied, and :class:`BatchRejected` is raised with the reasons.

    The batch already staged or accepted is returned as it is. While another batch is staged the
    new one is refused (naming the staged one) unless ``replace``: the replaced batch is then kept in
    the quarantine when the store still holds it, and the replacement is recorded. ``details`` are
    added to the ``labels_submitted`` event's data (e.g. a tool import's ``reviewed_unchanged``).
    """
    n = ws.resolve(round_number)
    with _intake_lock(ws, n):
        record = ws.record(n)
        _require_request(record)
        accepted, staged = record.labels_accepted, record.staged
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
        if staged and staged.batch_sha256 == digest:
            return staged
        if staged and not replace:
            raise WorkspaceError(f"round {n}: batch {staged.batch_sha256} from {staged.annotator} is staged and waits "
                                 f"for review; approve or reject it first (`activeseg approve|reject --round {n}`), "
                                 "or replace it (`--replace`)")
        annotator = annotator or "unknown"
        origin = "folder" if source is not None else "store"
        ws.ledger.append("labels_received", n, annotator, {
            "annotator": annotator, "batch_sha256": digest, "files": len(entries), "source": origin},
            once_key=_attempt(ws, n, digest))
        report = validate_label_batch(entries, _label_sizes(ws, record), ws.cfg.data.classes,
                                      ws.cfg.oracle.allow_empty_masks, cap, n, already_accepted=accepted is not None)
        if not report.success:
            prefix = _quarantine(ws, n, entries, digest, annotator, report.reasons, "validation", source is None,
                                 report.to_dict())
            raise BatchRejected(n, report.reasons, f"{ws.store.url}/{prefix}")
        return _stage(ws, record, entries, digest, annotator, report, origin, details)


def submit(ws: WorkspaceCore, round_number: int | None, folder: str | Path, annotator: str,
           replace: bool = False, details: dict[str, Any] | None = None) -> Staged | LabelsAccepted:
    """Hand in a folder of masks as ``annotator``: validated whole, then uploaded to
    ``labels/round-NNN/`` and staged for approval (or quarantined with :class:`BatchRejected`);
    ``details``: see :func:`ingest`."""
    if not annotator:
        raise WorkspaceError("an annotator name is required")
    return ingest(ws, round_number, annotator, source=Path(folder), replace=replace, details=details)


def reject_unreadable(ws: WorkspaceCore, round_number: int, entries: list[BatchEntry], annotator: str,
                      reasons: list[str], source: str) -> BatchRejected:
    """Quarantine a hand-in that cannot be read as masks at all (a tool's export with a format error),
    recorded like a batch that fails validation (``labels_received``, ``batch_rejected``); nothing is
    applied. Returns the :class:`BatchRejected` to raise."""
    with _intake_lock(ws, round_number):
        _require_request(ws.record(round_number))
        digest = batch_sha256(entries)
        ws.ledger.append("labels_received", round_number, annotator, {
            "annotator": annotator, "batch_sha256": digest, "files": len(entries), "source": source},
            once_key=_attempt(ws, round_number, digest))
        prefix = _quarantine(ws, round_number, entries, digest, annotator, reasons, "validation", False,
                             {"source": source})
    return BatchRejected(round_number, reasons, f"{ws.store.url}/{prefix}")


def simulate_labels(ws: WorkspaceCore, round_number: int | None = None) -> Staged | LabelsAccepted:
    """Answer the round's request from the ground truth as ``simulated-oracle``, through :func:`submit`
    (staged: it still needs an approval)."""
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


def approve(ws: WorkspaceCore, round_number: int | None, by: str, comment: str = "", batch: str | None = None,
            flow_run_id: str | None = None) -> LabelsAccepted:
    """Take the staged batch in as approved by ``by``: ledger ``labels_approved``, then the files to
    labels/, DVC, commit, the known masks (``labels_committed``; the DVC push comes with the round's
    close). ``batch``: the hash the approval names (None: whatever is staged); ``flow_run_id``: the round
    run that was resumed (None for an approval by hand). Approving the accepted batch again returns it
    and records nothing.
    """
    if not by:
        raise WorkspaceError("an approver name is required (--by NAME)")
    n = ws.resolve(round_number)
    with _intake_lock(ws, n):
        record = ws.record(n)
        accepted, staged = record.labels_accepted, record.staged
        if accepted is not None:
            if batch in (None, accepted.batch_sha256):
                return accepted
            raise WorkspaceError(f"round {n}: batch {accepted.batch_sha256[:12]} was already approved; the approval "
                                 f"names batch {batch[:12]}")
        if staged is None:
            raise WorkspaceError(f"round {n}: no label batch is staged, so there is nothing to approve; hand one in "
                                 f"with `activeseg labels submit DIR --annotator NAME --round {n}` (or upload it to "
                                 f"{ws.store.url}/{round_prefix('labels', n)} and run `activeseg labels ingest "
                                 f"--round {n}`)")
        if batch not in (None, staged.batch_sha256):
            raise WorkspaceError(f"round {n}: the approval names batch {batch[:12]} but the staged batch is "
                                 f"{staged.batch_sha256[:12]}")
        entries = read_store_batch(ws.store, n, ws.cfg.oracle.max_file_bytes)
        if batch_sha256(entries) != staged.batch_sha256:
            raise WorkspaceError(f"round {n}: {ws.store.url}/{round_prefix('labels', n)} no longer holds the staged "
                                 f"batch {staged.batch_sha256[:12]}; reject it (`activeseg reject --round {n}`) or "
                                 f"stage what is there (`activeseg labels ingest --round {n} --replace`)")
        ws.ledger.append("labels_approved", n, by, {
            "approver": by, "comment": comment, "batch_sha256": staged.batch_sha256, "annotator": staged.annotator,
            "regions": [r.id for r in record.requested()], "flow_run_id": flow_run_id}, once_key=staged.batch_sha256)
        return _accept(ws, record, entries, staged)


def reject(ws: WorkspaceCore, round_number: int | None, by: str, reason: str) -> dict[str, Any]:
    """Send the batch waiting in ``labels/round-NNN/`` (staged, or uploaded and not yet ingested) to
    quarantine with the reviewer's reason; the request stays open. Rejecting again returns the same."""
    n = ws.resolve(round_number)
    with _intake_lock(ws, n):
        record = ws.record(n)
        if record.labels_accepted is not None:
            raise WorkspaceError(f"round {n}: batch {record.labels_accepted.batch_sha256[:12]} was already approved; "
                                 "there is nothing to reject")
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
        annotator = record.staged.annotator if record.staged else None
        prefix = _quarantine(ws, n, entries, digest, annotator, reasons, by, True, {"reason": reason})
        return {"round": n, "batch_sha256": digest, "by": by, "reason": reason,
                "quarantine": f"{ws.store.url}/{prefix}"}


def _label_sizes(ws: WorkspaceCore, record: RoundRecord) -> dict[str, tuple[int, int]]:
    """Requested id -> (h, w) of the region's in-image part: the size of the mask to upload."""
    sizes = {}
    for item in record.requested():
        region = item.region()
        sample = ws.dataset.samples[region.stem]
        ys, xs = region.clipped(sample.height, sample.width)
        sizes[region.id] = (ys.stop - ys.start, xs.stop - xs.start)
    return sizes


def _attempt(ws: WorkspaceCore, n: int, digest: str) -> str:
    """The once-key of a batch's intake events: its hash and the round's rejections so far, so a
    retried intake records nothing twice and a batch handed in again after a rejection is recorded anew."""
    return f"{digest}:{len(ws.ledger.events(type='batch_rejected', round=n))}"


def _quarantine(ws: WorkspaceCore, n: int, entries: list[BatchEntry], digest: str, annotator: str | None,
                reasons: list[str], by: str, from_store: bool, extra: dict[str, Any]) -> str:
    """Move a batch to quarantine with its report, restore an accepted batch it displaced, unstage a
    staged batch it displaced (the store no longer holds it), and record the rejection; returns the
    quarantine prefix."""
    prefix = quarantine(ws.store, n, entries, {"annotator": annotator, "batch_sha256": digest,
                                               "rejected_by": by, "reasons": reasons, **extra}, from_store)
    record = ws.record(n)
    if from_store and record.labels_accepted:  # a second batch for an accepted round: it goes back
        folder = ws.root / "labels" / round_name(n)
        upload_batch(ws.store, n, [BatchEntry(p.name, "file", p.stat().st_size, p.read_bytes())
                                   for p in sorted(folder.glob("*.png"))])
    if from_store and record.staged:
        record.staged = None
        ws.records.save(record)
    ws.ledger.append("batch_rejected", n, by, {"annotator": annotator, "batch_sha256": digest,
                                               "reasons": reasons, "quarantine": prefix, "by": by})
    return prefix


def _stage(ws: WorkspaceCore, record: RoundRecord, entries: list[BatchEntry], digest: str, annotator: str,
           report: ValidationReport, origin: str, details: dict[str, Any] | None = None) -> Staged:
    """Upload a validated batch (from a folder) and record it as staged (ledger labels_submitted, with
    ``details``; their ``reviewed_unchanged`` also in the record); a staged batch it replaces is kept in
    the quarantine first when the store still holds it."""
    n, replaced = record.round, record.staged
    cap = ws.cfg.oracle.max_file_bytes
    if replaced is not None and origin == "folder":
        previous = read_store_batch(ws.store, n, cap)
        if batch_sha256(previous) == replaced.batch_sha256:
            quarantine(ws.store, n, previous, {"annotator": replaced.annotator, "batch_sha256": replaced.batch_sha256,
                                               "replaced_by": digest, "by": annotator}, from_store=False)
    if origin == "folder":
        upload_batch(ws.store, n, entries)
    write_json(ws.root / "rounds" / round_name(n) / "labels-validation.json", report.to_dict())
    replaces = replaced.batch_sha256 if replaced else None
    event = ws.ledger.append("labels_submitted", n, annotator, {
        "annotator": annotator, "batch_sha256": digest, "files": len(entries), "source": origin,
        "replaces": replaces, **(details or {})}, once_key=_attempt(ws, n, digest))
    record.staged = Staged(round=n, annotator=annotator, batch_sha256=digest, files=len(entries), time=event.time,
                           replaces=replaces, reviewed_unchanged=(details or {}).get("reviewed_unchanged"))
    ws.records.save(record)
    return record.staged


def _accept(ws: WorkspaceCore, record: RoundRecord, entries: list[BatchEntry], staged: Staged) -> LabelsAccepted:
    """Write the approved batch to labels/, rebuild the known masks, commit; the record's staged
    entry becomes its labels_accepted (``reviewed_unchanged`` kept)."""
    n = record.round
    folder = ws.root / "labels" / round_name(n)
    staging = ws.root / "tmp" / f"labels-{round_name(n)}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for entry in entries:
        (staging / entry.name).write_bytes(entry.data)
    shutil.rmtree(folder, ignore_errors=True)
    staging.replace(folder)
    state = save_state(ws, ws.records.accepted() + [(n, staged.annotator)])
    accepted = commit_labels(ws, record, staged.annotator, staged.batch_sha256, state)
    record.labels_accepted = accepted.model_copy(update={"reviewed_unchanged": staged.reviewed_unchanged})
    record.staged = None
    ws.records.save(record)
    return record.labels_accepted


def label_targets(record: RoundRecord) -> list[str]:
    """The DVC-tracked label paths of a round: its label folder, and its pseudo-labels when it has any."""
    targets = [f"labels/{round_name(record.round)}"]
    if record.queried is not None and record.queried.pseudo is not None:
        targets.append(record.queried.pseudo.file)
    return targets


def commit_labels(ws: WorkspaceCore, record: RoundRecord, annotator: str, digest: str | None,
                  state: LabelState) -> LabelsAccepted:
    """Track and commit a round's label files (and pseudo-labels); ledger labels_committed. They reach
    the DVC remote with the round's other outputs in its one push when it closes (``evaluate``). Round 0
    (``init``) only records them: init tracks, pushes and commits them itself."""
    n, regions = record.round, record.requested()
    targets = label_targets(record)
    if n > 0:
        ws.vcs.track(*targets)
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
