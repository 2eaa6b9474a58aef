"""Corrections: revoking an accepted label batch, or some of its regions, that turned out wrong.

Nothing is deleted: the label files of the batch stay in ``labels/round-NNN/`` and at their round tag.
A revocation is recorded three times: the ledger event ``labels_revoked`` (by the reviewer, with the
reason), an entry appended to ``labels/revoked.json`` and a commit of its own (with the ledger export),
so the history stays linear and ``audit verify`` passes. From then on the known masks
(:mod:`.state`) leave the revoked labels out, so the next training does not use them and the regions
are candidates again for the next query (their pixels are unknown, unless another, non-revoked region
reveals them). When the round in progress has an open request (queried, no batch staged or accepted),
the regions are added to it instead: the request is published again with them (ledger
``request_published``) and the batch that answers it must cover them.
"""

from __future__ import annotations

from typing import Any

from activeseg.core.labels import LabelState
from activeseg.core.util import canonical_json, sha256_text, utc_now, write_json
from activeseg.workspace.base import WorkspaceCore
from activeseg.workspace.errors import WorkspaceError
from activeseg.workspace.exchange.intake import _intake_lock
from activeseg.workspace.exchange.layout import round_prefix
from activeseg.workspace.exchange.requests import publish_request, read_manifest
from activeseg.workspace.identity import Actor, authorize
from activeseg.workspace.identity import record as record_decision
from activeseg.workspace.records import RequestedRegion, RoundRecord
from activeseg.workspace.state import REVOKED, build_state, label_state, revocations, revoked_pairs, save_state


def revoke(ws: WorkspaceCore, round_number: int, by: Actor, reason: str,
           regions: list[str] | None = None) -> dict[str, Any]:
    """Revoke the accepted labels of round ``round_number`` (all its regions not yet revoked, or the
    ``regions`` ids) as ``by`` with ``reason``; see the module docstring. Refused (:class:`WorkspaceError`):
    no reviewer or reason, an unknown round, a round whose batch was not accepted, unknown region ids,
    regions revoked already. Returns the revocation: round, regions, by, reason, batch_sha256,
    annotator, revoked_pixels, returned_to, returned, commit. ``by`` must be a reviewer (refused and
    recorded otherwise, :func:`activeseg.workspace.identity.authorize`); their signature, if any, is on the
    ``labels_revoked`` event."""
    if not by.name:
        raise WorkspaceError("a reviewer name is required (--by NAME)")
    if not reason or not reason.strip():
        raise WorkspaceError("a reason is required (--reason TEXT)")
    n = int(round_number)
    current = ws.current_round()
    with _intake_lock(ws, current):
        record = _accepted_record(ws, n)
        ids = _chosen(ws, record, regions)
        accepted = ws.records.accepted()
        before = label_state(ws)
        after = build_state(ws, accepted, revoked_pairs(ws) | {(n, i) for i in ids})
        open_record = ws.record(current)
        is_open = (current != n and open_record.queried is not None and open_record.labels_accepted is None
                   and open_record.staged is None)
        asked = {r.id for r in open_record.requested()} if is_open else set()
        back = [r for r in record.requested() if r.id in ids and r.id not in asked
                and after.new_pixels(r.region()) > 0] if is_open else []
        done = record.labels_accepted
        authorize(ws, by, "labels_revoked", n, {"regions": ids, "batch_sha256": done.batch_sha256, "reason": reason})
        data = {"by": by.name, "reason": reason, "regions": ids, "batch_sha256": done.batch_sha256,
                "annotator": done.annotator, "revoked_pixels": before.revealed_pixels() - after.revealed_pixels(),
                "returned_to": current if is_open else None, "returned": [r.id for r in back]}
        event = record_decision(ws, by, "labels_revoked", n, data,
                                once_key=f"{done.batch_sha256 or 'initial'}:{','.join(ids)}")
        write_json(ws.root / REVOKED, [*revocations(ws), {
            "round": n, "regions": ids, "by": by.name, "reason": reason, "batch_sha256": done.batch_sha256,
            "annotator": done.annotator, "time": event.time, "ledger_seq": event.seq}])
        if back:
            _return_to_request(ws, open_record, back, after)
        save_state(ws, accepted)
        ws.ledger.export_jsonl(ws.root / "ledger.jsonl")
        commit = ws.vcs.commit(f"round {n}: {len(ids)} labels revoked by {by.name}: {reason}")
    return {"round": n, **event.data, "commit": commit}


def _accepted_record(ws: WorkspaceCore, n: int) -> RoundRecord:
    """The record of round ``n``, which must have an accepted batch."""
    if n < 0 or n not in ws.records.numbers():
        known = ", ".join(str(k) for k in ws.records.numbers())
        raise WorkspaceError(f"round {n}: no such round (recorded rounds: {known})")
    record = ws.record(n)
    if record.labels_accepted is None:
        state = "a batch is staged and waits for review" if record.staged else "no batch was accepted"
        raise WorkspaceError(f"round {n}: {state}, so there is nothing to revoke (reject a staged batch with "
                             f"`activeseg reject --round {n}`)")
    return record


def _chosen(ws: WorkspaceCore, record: RoundRecord, regions: list[str] | None) -> list[str]:
    """The region ids to revoke: ``regions`` (each one of the round's, none revoked yet) or, when None,
    every region of the round not revoked yet."""
    n = record.round
    ids = [r.id for r in record.requested()]
    gone = {i for r, i in revoked_pairs(ws) if r == n}
    if regions is None:
        chosen = [i for i in ids if i not in gone]
        if not chosen:
            raise WorkspaceError(f"round {n}: every label of the batch was revoked already")
        return chosen
    chosen = list(dict.fromkeys(r.strip() for r in regions if r.strip()))
    if not chosen:
        raise WorkspaceError("--regions names no region id")
    unknown = [i for i in chosen if i not in ids]
    if unknown:
        raise WorkspaceError(f"round {n}: not regions of its batch: {', '.join(unknown)} (the batch has "
                             f"{', '.join(ids)})")
    twice = [i for i in chosen if i in gone]
    if twice:
        raise WorkspaceError(f"round {n}: already revoked: {', '.join(twice)} (`activeseg audit --round {n}`)")
    return [i for i in ids if i in chosen]


def _return_to_request(ws: WorkspaceCore, record: RoundRecord, back: list[RequestedRegion],
                       state: LabelState) -> None:
    """Add revoked regions to the round's open request (cost: their unknown pixels once revoked, no
    score), publish it again and record it (ledger ``request_published``)."""
    n, queried = record.round, record.queried
    added = [RequestedRegion(id=r.id, stem=r.stem, box=list(r.box), cost=state.new_pixels(r.region()), score=None)
             for r in back]
    queried.regions = [*queried.regions, *added]
    manifest = read_manifest(ws.store, n) or {}
    meta = {k: v for k, v in manifest.items() if k not in ("round", "regions")} or {"created": utc_now()}
    published = publish_request(ws.store, n, [r.model_dump() for r in queried.published()], ws.dataset, meta)
    queried.manifest_sha256 = sha256_text(canonical_json(published))
    ws.records.save(record)
    request = round_prefix("requests", n)
    ws.ledger.append("request_published", n, ws.actor, {
        "regions": [r.id for r in queried.regions], "store": ws.store.url, "manifest": request + "manifest.json",
        "manifest_sha256": queried.manifest_sha256, "returned": [r.id for r in added]},
        once_key=queried.manifest_sha256)
