"""Label intake: a batch is submitted (a local folder) or ingested (the store's upload folder
``labels/round-NNN/``) and validated whole; a valid one is *staged*: copied to its write-once place
``staged/round-NNN/<batch sha256>/`` in the store (an ingested batch then leaves the upload folder), recorded,
waiting for a reviewer; a bad one is quarantined with its reasons. Approving the staged batch takes it in
from its staged place, after checking its bytes against its hash (written to labels/, tracked by DVC,
committed, the known masks updated); rejecting it quarantines it with the reviewer's reason and the round
waits for another batch. Nothing uploaded later can change a staged batch, and no staged batch leaves
staging unrecorded or without a copy in the quarantine; an approved batch keeps its staged place, the
store's copy of what was taken in.

Ledger: ``labels_received`` (a batch arrived, by the annotator), then ``batch_rejected`` (validation)
or ``labels_submitted`` (staged, by the annotator); then ``labels_approved`` (by the approver) and
``labels_committed``, or ``batch_rejected`` (by the reviewer), or ``batch_unstaged`` (replaced by another
batch, or its staged bytes changed). An approval that is not taken is ``approval_refused`` (approver,
batch, reason). One batch at a time: a second submission while one is staged is refused unless it
replaces it (``replace``: the replaced batch is quarantined and recorded as unstaged).
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
from activeseg.loop.oracle import ground_truth
from activeseg.workspace.base import WorkspaceCore
from activeseg.workspace.errors import ApprovalRefused, BatchRejected, WorkspaceError
from activeseg.workspace.exchange.batches import (BatchEntry, batch_sha256, changed_files, clear_staged, clear_upload,
                                                  quarantine, read_folder_batch, read_staged_batch, read_store_batch,
                                                  stage_batch)
from activeseg.workspace.exchange.controls import control_check
from activeseg.workspace.exchange.images import mask_png
from activeseg.workspace.exchange.layout import round_prefix, staged_prefix
from activeseg.workspace.identity import Actor, authorize, require_known
from activeseg.workspace.identity import record as record_decision
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


def ingest(ws: WorkspaceCore, round_number: int | None, by: Actor, source: Path | None = None,
           replace: bool = False, details: dict[str, Any] | None = None,
           annotator: str | None = None) -> Staged | LabelsAccepted:
    """Stage a label batch, from ``source`` (a local folder) or else from the upload folder
    ``labels/round-NNN/`` in the store. The whole batch is validated first. Valid: copied to its staged
    place (and removed from the upload folder) and staged for approval (:func:`approve`); returned as
    :class:`Staged`. Otherwise it is quarantined, the ledger records the rejection, nothing is applied (a
    batch already staged stays staged), and :class:`BatchRejected` is raised with the reasons.

    The batch already staged or accepted is returned as it is. While another batch is staged the
    new one is refused (naming the staged one) unless ``replace``: the replaced batch then goes to the
    quarantine, recorded as unstaged. ``details`` are added to the ``labels_submitted`` event's data
    (e.g. a tool import's ``reviewed_unchanged``).

    ``by`` hands the batch in: a person with the annotator role (or the simulated annotator), checked
    and, when they sign, signing the ``labels_submitted`` event (:mod:`activeseg.workspace.identity`);
    ``annotator``: who made the batch when that is someone else (a tool's export names them; default:
    ``by``).
    """
    n = ws.resolve(round_number)
    annotator = annotator or by.name
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
        authorize(ws, by, "labels_submitted", n, {"batch_sha256": digest, "annotator": annotator})
        if accepted and accepted.batch_sha256 == digest:
            return accepted
        if staged and staged.batch_sha256 == digest:
            if source is None:  # a staging cut short before it emptied the upload folder
                clear_upload(ws.store, n, entries)
            if replace and annotator not in (None, staged.annotator):
                raise WorkspaceError(f"round {n}: the batch from {annotator} is byte for byte batch "
                                     f"{digest[:12]}, already staged from {staged.annotator}: nothing to replace")
            return staged
        if staged and not replace:
            raise WorkspaceError(f"round {n}: batch {staged.batch_sha256} from {staged.annotator} is staged and waits "
                                 f"for review; approve or reject it first (`activeseg approve|reject --round {n}`), "
                                 "or replace it (`--replace`)")
        origin = "folder" if source is not None else "store"
        ws.ledger.append("labels_received", n, by.name, {
            "annotator": annotator, "batch_sha256": digest, "files": len(entries), "source": origin},
            once_key=_attempt(ws, n, digest))
        report = validate_label_batch(entries, _label_sizes(ws, record), ws.cfg.data.classes,
                                      ws.cfg.oracle.allow_empty_masks, cap, n, already_accepted=accepted is not None)
        if not report.success:
            upload = round_prefix("labels", n) if source is None else None
            prefix = _quarantine(ws, n, entries, digest, annotator, report.reasons, "validation", upload,
                                 report.to_dict())
            raise BatchRejected(n, report.reasons, f"{ws.store.url}/{prefix}")
        return _stage(ws, record, entries, digest, by, annotator, report, origin, details)


def submit(ws: WorkspaceCore, round_number: int | None, folder: str | Path, by: Actor, replace: bool = False,
           details: dict[str, Any] | None = None, annotator: str | None = None) -> Staged | LabelsAccepted:
    """Hand in a folder of masks as ``by``: validated whole, then copied to its staged place in
    the store and staged for approval (or quarantined with :class:`BatchRejected`);
    ``details`` and ``annotator``: see :func:`ingest`."""
    if not by.name:
        raise WorkspaceError("an annotator name is required")
    return ingest(ws, round_number, by, source=Path(folder), replace=replace, details=details, annotator=annotator)


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
        prefix = _quarantine(ws, round_number, entries, digest, annotator, reasons, "validation", None,
                             {"source": source})
    return BatchRejected(round_number, reasons, f"{ws.store.url}/{prefix}")


def simulate_labels(ws: WorkspaceCore, round_number: int | None = None) -> Staged | LabelsAccepted:
    """Answer the round's request from the ground truth as ``simulated-oracle`` (the simulated annotator:
    no access check, never signed), through :func:`submit` (staged: it still needs an approval)."""
    record = ws.record(ws.resolve(round_number))
    if record.labels_accepted is not None:
        return record.labels_accepted
    _require_request(record)
    (ws.root / "tmp").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ws.root / "tmp") as folder:
        for item in record.queried.regions:
            mask = ground_truth(ws.dataset, item.region())
            (Path(folder) / f"{item.id}.png").write_bytes(mask_png(mask, ws.cfg.data.classes))
        return submit(ws, record.round, folder, Actor.simulated_oracle())


def approve(ws: WorkspaceCore, round_number: int | None, by: Actor, comment: str = "", batch: str | None = None,
            flow_run_id: str | None = None) -> LabelsAccepted:
    """Take the staged batch in as approved by ``by``: ledger ``labels_approved``, then the files to
    labels/, DVC, commit, the known masks (``labels_committed``; the DVC push comes with the round's
    close). ``batch``: the hash the approval names (None: whatever is staged); ``flow_run_id``: the round
    run that was resumed (None for an approval by hand). Approving the accepted batch again returns it
    and records nothing.

    An approval that names another batch than the staged one, or none while none is staged, or whose
    staged batch no longer holds the bytes that were staged, is refused: ledger ``approval_refused``
    and :class:`ApprovalRefused`; a changed batch also goes to the quarantine with the reason
    (``batch_unstaged``), so the round waits for a batch again.

    ``by`` must be a reviewer, not an annotator of the batch under four eyes, and sign when signatures
    are required (:func:`activeseg.workspace.identity.authorize`: refused and recorded otherwise); the
    simulated annotator (no other actor that is no person) approves only with ``oracle.kind: simulated``.
    """
    if not by.name:
        raise WorkspaceError("an approver name is required (--by NAME)")
    if by.system and ws.cfg.oracle.kind != "simulated":
        raise WorkspaceError(f"the simulated annotator approves only with oracle.kind: simulated (this campaign's "
                             f"oracle is {ws.cfg.oracle.kind}): a reviewer approves with --by NAME")
    n = ws.resolve(round_number)
    require_known(ws, by)
    with _intake_lock(ws, n):
        record = ws.record(n)
        accepted, staged = record.labels_accepted, record.staged
        if accepted is not None:
            if batch in (None, accepted.batch_sha256):
                return accepted
            raise WorkspaceError(f"round {n}: batch {accepted.batch_sha256[:12]} was already approved; the approval "
                                 f"names batch {batch[:12]}")
        if staged is None and batch is None:
            raise WorkspaceError(f"round {n}: no label batch is staged, so there is nothing to approve; hand one in "
                                 f"with `activeseg labels submit DIR --annotator NAME --round {n}` (or upload it to "
                                 f"{ws.store.url}/{round_prefix('labels', n)} and run `activeseg labels ingest "
                                 f"--round {n}`)")
        if staged is None:
            raise _refuse(ws, n, by.name, batch, "no label batch is staged (it was rejected or replaced)", flow_run_id)
        if batch not in (None, staged.batch_sha256):
            raise _refuse(ws, n, by.name, batch,
                          f"the staged batch is {staged.batch_sha256[:12]}, not the one approved",
                          flow_run_id)
        data = approval_data(record, staged, by.name, comment, flow_run_id)
        authorize(ws, by, "labels_approved", n, data, annotators=batch_annotators(ws, staged))
        entries = read_staged_batch(ws.store, n, staged.batch_sha256, ws.cfg.oracle.max_file_bytes)
        if batch_sha256(entries) != staged.batch_sha256:
            changed = changed_files(ws.store, n, staged.batch_sha256, entries)
            reason = (f"the staged batch no longer holds the bytes that were staged ({', '.join(changed[:5])}"
                      + (f" and {len(changed) - 5} more" if len(changed) > 5 else "") + ")")
            prefix = _unstage(ws, n, staged, by.name, reason)
            raise _refuse(ws, n, by.name, staged.batch_sha256, reason, flow_run_id, prefix)
        record_decision(ws, by, "labels_approved", n, data, once_key=staged.batch_sha256)
        return _accept(ws, record, entries, staged)  # its staged place stays: the store's copy of what was taken in


def approval_data(record: RoundRecord, staged: Staged, approver: str, comment: str,
                  flow_run_id: str | None) -> dict[str, Any]:
    """The data of the ``labels_approved`` event of ``staged`` (what an approver's signature covers)."""
    return {"approver": approver, "comment": comment, "batch_sha256": staged.batch_sha256,
            "annotator": staged.annotator, "regions": [r.id for r in record.requested()],
            "flow_run_id": flow_run_id}


def batch_annotators(ws: WorkspaceCore, staged: Staged) -> tuple[str, ...]:
    """Everyone who is an annotator of the staged batch (four eyes): the annotators it names (a tool's
    export may name several, joined by ``, ``) and whoever handed it in (``labels_submitted``'s actor)."""
    handed = {e.actor for e in ws.ledger.events(type="labels_submitted", round=staged.round)
              if e.data["batch_sha256"] == staged.batch_sha256}
    return tuple(sorted(handed | set(staged.annotator.split(", "))))


def reject(ws: WorkspaceCore, round_number: int | None, by: Actor, reason: str) -> dict[str, Any]:
    """Send the staged batch (or, when none is staged, what waits in the upload folder ``labels/round-NNN/``)
    to quarantine with the reviewer's reason; the request stays open. Rejecting again returns the same.
    ``by`` must be a reviewer (and sign when signatures are required); their signature is on the
    ``batch_rejected`` event."""
    n = ws.resolve(round_number)
    with _intake_lock(ws, n):
        record = ws.record(n)
        if record.labels_accepted is not None:
            raise WorkspaceError(f"round {n}: batch {record.labels_accepted.batch_sha256[:12]} was already approved; "
                                 "there is nothing to reject")
        reasons = [f"rejected by {by.name}: {reason}"]
        staged, cap = record.staged, ws.cfg.oracle.max_file_bytes
        if staged is not None:
            source = staged_prefix(n, staged.batch_sha256) + "files/"
            entries, digest = read_staged_batch(ws.store, n, staged.batch_sha256, cap), staged.batch_sha256
        else:
            source = round_prefix("labels", n)
            entries = read_store_batch(ws.store, n, cap)
            digest = batch_sha256(entries)
        if not entries and staged is None:
            done = [e for e in ws.ledger.events(type="batch_rejected", round=n) if e.data["reasons"] == reasons]
            if done:
                return {"round": n, "batch_sha256": done[-1].data["batch_sha256"], "by": by.name, "reason": reason,
                        "quarantine": f"{ws.store.url}/{done[-1].data['quarantine']}"}
            raise WorkspaceError(f"round {n}: no staged or uploaded batch to reject (the upload folder is "
                                 f"{ws.store.url}/{source})")
        annotator = staged.annotator if staged else None
        authorize(ws, by, "batch_rejected", n, {"batch_sha256": digest, "annotator": annotator, "reason": reason})
        prefix = _quarantine(ws, n, entries, digest, annotator, reasons, by, source, {"reason": reason})
        if staged is not None:
            _drop_staged(ws, n, staged)
        return {"round": n, "batch_sha256": digest, "by": by.name, "reason": reason,
                "quarantine": f"{ws.store.url}/{prefix}"}


def _refuse(ws: WorkspaceCore, n: int, by: str, batch: str, reason: str, flow_run_id: str | None,
            quarantined: str | None = None) -> ApprovalRefused:
    """Record an approval that is not taken (``approval_refused``); the error to raise."""
    ws.ledger.append("approval_refused", n, by, {"approver": by, "batch_sha256": batch, "reason": reason,
                                                 "flow_run_id": flow_run_id, "quarantine": quarantined})
    where = f"; the batch is in quarantine at {ws.store.url}/{quarantined}" if quarantined else ""
    return ApprovalRefused(n, batch, f"round {n}: the approval of batch {batch[:12]} by {by} was refused: "
                                     f"{reason}{where}")


def _unstage(ws: WorkspaceCore, n: int, staged: Staged, by: str, reason: str) -> str:
    """Move a staged batch that will not be approved (replaced, or its bytes changed) to the quarantine with
    ``reason``, drop it from the record and record ``batch_unstaged``; returns the quarantine prefix."""
    source = staged_prefix(n, staged.batch_sha256) + "files/"
    entries = read_staged_batch(ws.store, n, staged.batch_sha256, ws.cfg.oracle.max_file_bytes)
    prefix = quarantine(ws.store, n, entries, {"annotator": staged.annotator, "batch_sha256": staged.batch_sha256,
                                               "unstaged_by": by, "reasons": [reason]}, source)
    _drop_staged(ws, n, staged)
    ws.ledger.append("batch_unstaged", n, by, {"annotator": staged.annotator, "batch_sha256": staged.batch_sha256,
                                               "by": by, "reason": reason, "quarantine": prefix})
    return prefix


def _drop_staged(ws: WorkspaceCore, n: int, staged: Staged) -> None:
    """The staged batch's place removed from the store (its bytes are in the quarantine) and from the record."""
    clear_staged(ws.store, n, staged.batch_sha256)
    record = ws.record(n)
    record.staged = None
    ws.records.save(record)


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
    """The once-key of a batch's intake events: its hash and the round's rejections and unstagings so far,
    so a retried intake records nothing twice and a batch handed in again after a rejection is recorded anew."""
    ended = len(ws.ledger.events(type="batch_rejected", round=n)) + len(ws.ledger.events(type="batch_unstaged",
                                                                                         round=n))
    return f"{digest}:{ended}"


def _quarantine(ws: WorkspaceCore, n: int, entries: list[BatchEntry], digest: str, annotator: str | None,
                reasons: list[str], by: str | Actor, source: str | None, extra: dict[str, Any]) -> str:
    """Move a batch to quarantine with its report (``source``: the store prefix it came from, emptied;
    None for a local folder) and record the rejection (``by``: a reviewer, whose decision it is and who
    may sign it, or the name of the check that rejected it, e.g. ``validation``); returns the quarantine
    prefix."""
    name = by.name if isinstance(by, Actor) else by
    prefix = quarantine(ws.store, n, entries, {"annotator": annotator, "batch_sha256": digest,
                                               "rejected_by": name, "reasons": reasons, **extra}, source)
    data = {"annotator": annotator, "batch_sha256": digest, "reasons": reasons, "quarantine": prefix, "by": name}
    if isinstance(by, Actor):
        record_decision(ws, by, "batch_rejected", n, data)
    else:
        ws.ledger.append("batch_rejected", n, name, data)
    return prefix


def _stage(ws: WorkspaceCore, record: RoundRecord, entries: list[BatchEntry], digest: str, by: Actor,
           annotator: str, report: ValidationReport, origin: str, details: dict[str, Any] | None = None) -> Staged:
    """Copy a validated batch to its staged place and record it as staged (ledger labels_submitted by
    ``by``, signed when they sign, with ``details``; their ``reviewed_unchanged`` and ``clipped`` also in the
    record); a staged batch it replaces goes to the quarantine first (``batch_unstaged``); a batch from
    the upload folder then leaves it."""
    n, replaced = record.round, record.staged
    prefix = stage_batch(ws.store, n, entries, digest, {"annotator": annotator, "source": origin})
    if replaced is not None:
        _unstage(ws, n, replaced, by.name, f"replaced by batch {digest[:12]} from {annotator}")
    write_json(ws.root / "rounds" / round_name(n) / "labels-validation.json", report.to_dict())
    replaces = replaced.batch_sha256 if replaced else None
    event = record_decision(ws, by, "labels_submitted", n, {
        "annotator": annotator, "batch_sha256": digest, "files": len(entries), "source": origin,
        "replaces": replaces, "staged": prefix, **(details or {})}, once_key=_attempt(ws, n, digest))
    record = ws.record(n)
    record.staged = Staged(round=n, annotator=annotator, batch_sha256=digest, files=len(entries), time=event.time,
                           replaces=replaces, reviewed_unchanged=(details or {}).get("reviewed_unchanged"),
                           clipped=(details or {}).get("clipped") or None)
    ws.records.save(record)
    if origin == "store":
        clear_upload(ws.store, n, entries)
    return record.staged


def _accept(ws: WorkspaceCore, record: RoundRecord, entries: list[BatchEntry], staged: Staged) -> LabelsAccepted:
    """Write the approved batch to labels/, score the round's controls on it (:func:`.controls.control_check`,
    before anything is committed), rebuild the known masks, commit; the record's staged entry becomes its
    labels_accepted (``reviewed_unchanged`` and ``clipped`` kept), recorded with the control check."""
    n = record.round
    folder = ws.root / "labels" / round_name(n)
    staging = ws.root / "tmp" / f"labels-{round_name(n)}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for entry in entries:
        (staging / entry.name).write_bytes(entry.data)
    shutil.rmtree(folder, ignore_errors=True)
    staging.replace(folder)
    control = control_check(ws, record, folder)
    state = save_state(ws, ws.records.accepted() + [(n, staged.annotator)])
    accepted = commit_labels(ws, record, staged.annotator, staged.batch_sha256, state)
    record.labels_accepted = accepted.model_copy(update={"reviewed_unchanged": staged.reviewed_unchanged,
                                                         "clipped": staged.clipped})
    record.control = control
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
