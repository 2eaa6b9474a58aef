"""Approving and rejecting a round's staged label batch (through the round run that waits for it, or
directly for a round run by hand), and what became of an approval."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from uuid import UUID

from activeseg.core.util import round_name
from activeseg.orchestration import workers
from activeseg.orchestration.engine import RunEngine, RunState
from activeseg.orchestration.guard import Claim, RoundError, read_claim
from activeseg.workspace import ApprovalRefused, Workspace
from activeseg.workspace.exchange.intake import approval_data, batch_annotators
from activeseg.workspace.identity import Actor, authorize, presign
from activeseg.workspace.identity import actor as identity_actor
from activeseg.workspace.records import RoundRecord

WAIT_SECONDS = 120.0
"""How long `activeseg approve` waits by default for the resumed round run to take the batch in or refuse it."""
POLL_SECONDS = 0.5


def waiting_run(engine: RunEngine, ws: Workspace, round_number: int,
                run_id: str | None = None) -> tuple[Claim, RunState]:
    """The flow run that waits for the labels of `round_number`; RoundError when there is none."""
    claim = read_claim(ws.root)
    if claim is None or claim.round_number != round_number or (run_id and claim.flow_run_id != run_id):
        last = (f"the campaign's last round run is for round {claim.round_number}" if claim
                else "no round has started")
        raise RoundError(f"round {round_number}: no flow run waits for its labels ({last})")
    state = engine.state(claim.run_id)
    if state is None or not state.suspended:
        now = f"{state.name}" + (f" ({state.message})" if state and state.message else "") if state else "unknown"
        raise RoundError(f"round {round_number}: flow run {claim.flow_run_id} is not waiting for labels: it is {now}")
    return claim, state


def run_owns_round(ws: Workspace, round_number: int) -> bool:
    """Whether a round run of the workflow engine claimed the round (then its approval resumes that run);
    otherwise the round is run by hand (`activeseg step`) and an approval takes the batch in at once."""
    claim = read_claim(ws.root)
    return claim is not None and claim.round_number == round_number


def approve(engine: RunEngine | None, ws: Workspace, round_number: int, by: str, comment: str = "", *,
            run_id: str | None = None, wait_seconds: float | None = None, sign: str | None = None) -> dict[str, Any]:
    """Approve the round's staged batch (the one that passed validation; see `activeseg.workspace.exchange.intake`)
    and say what became of it: `outcome` "taken_in" (with its `commit`), "refused" (with the `reason`;
    the refusal is in the ledger), "failed" (the round run ended otherwise: `reason`) or "pending" (not
    decided within `wait_seconds`, default `WAIT_SECONDS`; 0: not waited for).

    A round that no round run claimed (run by hand, `activeseg step`; `engine` may be None): the batch
    is taken in at once, or refused. Otherwise the run that waits for it is resumed with an approval
    naming the staged batch, and the run takes it in or refuses it; this waits up to `wait_seconds` to
    know which. Fails with RoundError, leaving the run suspended, when the round has no request, no
    batch is staged or no run waits (`run_id`: only that run). Approving the accepted batch again records
    no second approval. With `oracle.kind: labelstudio` and no batch yet, the round's completed
    annotations are pulled from Label Studio first (`pulled`: what that staged; see :func:`pull_labels`).

    `by` must be a reviewer of the access file and, under four eyes, not an annotator of the batch; `sign`:
    the key that signs the approval (see :class:`activeseg.workspace.identity.Actor`). For a round run, both
    are checked here, before it is resumed (a refusal is recorded, and the run keeps waiting), and the
    signature travels with the approval to the run, which records it.
    """
    if not by:
        raise RoundError("an approver name is required (--by NAME)")
    _require_request(ws, round_number)
    actor = identity_actor(ws.cfg, by, sign)
    if run_id is None and not run_owns_round(ws, round_number):
        pulled = pull_labels(ws, round_number)
        try:
            accepted = ws.approve(round_number, actor, comment)
        except ApprovalRefused as exc:
            return _refused(round_number, None, by, comment, exc, pulled)
        event = ws.ledger.last("labels_approved", round=round_number)  # None: accepted before approvals gated
        approval = event.data if event else {"approver": by, "comment": comment}
        return {"round": round_number, "flow_run_id": None, "approver": approval["approver"],
                "comment": approval["comment"], "batch_sha256": accepted["batch_sha256"],
                "annotator": accepted["annotator"], "commit": accepted["commit"], "pulled": pulled,
                "outcome": "taken_in", "reason": None}
    claim, _ = waiting_run(engine, ws, round_number, run_id)
    pulled = pull_labels(ws, round_number)
    record = ws.record(round_number)
    batch = record.staged or record.labels_accepted
    if batch is None:
        raise RoundError(_no_batch_message(ws, round_number))
    try:
        signed = _checked(ws, record, actor, comment, claim.flow_run_id)
    except ApprovalRefused as exc:
        return _refused(round_number, claim.flow_run_id, by, comment, exc, pulled)
    wait = WAIT_SECONDS if wait_seconds is None else wait_seconds
    seen = len(ws.ledger.events()) if wait else 0
    _settle(ws.root, claim.run_id)
    engine.resume(claim.run_id, {"approved": True, "approver": by, "comment": comment,
                                 "batch_hash": batch.batch_sha256, **signed})
    result = {"round": round_number, "flow_run_id": claim.flow_run_id, "approver": by, "comment": comment,
              "batch_sha256": batch.batch_sha256, "annotator": batch.annotator, "pulled": pulled}
    if not wait:
        return {**result, "outcome": "pending", "commit": None, "reason": "not waited for"}
    return {**result, **outcome(engine, ws, round_number, claim.run_id, batch.batch_sha256, seen, wait)}


def _checked(ws: Workspace, record: RoundRecord, actor: Actor, comment: str, flow_run_id: str) -> dict[str, str]:
    """Check that ``actor`` may approve the round's staged batch (refused and recorded: ApprovalRefused) and,
    when they sign, sign the approval the round run will record; the run input's signature fields."""
    staged = record.staged
    if staged is None or actor.system:  # taken in already (approving again records nothing), or no person
        return {}
    data = approval_data(record, staged, actor.name, comment, flow_run_id)
    authorize(ws, actor, "labels_approved", record.round, data, annotators=batch_annotators(ws, staged))
    if not actor.signs:
        return {}
    signed = presign(ws, actor, "labels_approved", record.round, data)
    return {"signature": signed.signature, "signed_time": signed.time, "signed_prev": signed.prev}


def _refused(round_number: int, flow_run_id: str | None, by: str, comment: str, exc: ApprovalRefused,
             pulled: str | None) -> dict[str, Any]:
    """The result of an approval that was refused (recorded already)."""
    return {"round": round_number, "flow_run_id": flow_run_id, "approver": by, "comment": comment,
            "batch_sha256": exc.batch, "annotator": None, "pulled": pulled, "outcome": "refused",
            "reason": str(exc), "commit": None}


def outcome(engine: RunEngine, ws: Workspace, round_number: int, run_id: UUID, batch: str, after_seq: int,
            wait_seconds: float) -> dict[str, Any]:
    """What the resumed round run did with the approval of `batch`, looked at every `POLL_SECONDS` for up to
    `wait_seconds`: taken in (the round's accepted batch), refused (an `approval_refused` event after
    event `after_seq`), failed (the run ended without either) or pending."""
    deadline = time.monotonic() + wait_seconds
    while True:
        accepted = ws.record(round_number).labels_accepted
        if accepted is not None and accepted.batch_sha256 == batch:
            return {"outcome": "taken_in", "commit": accepted.commit, "reason": None}
        refused = [e for e in ws.ledger.events(type="approval_refused", round=round_number) if e.seq > after_seq]
        if refused:
            data = refused[-1].data
            kept = f"; the batch is in quarantine at {ws.store.url}/{data['quarantine']}" if data["quarantine"] else ""
            return {"outcome": "refused", "commit": None, "reason": data["reason"] + kept}
        state = engine.state(run_id)
        if state is not None and state.final:
            return {"outcome": "failed", "commit": None,
                    "reason": f"flow run {state.name}" + (f": {state.message}" if state.message else "")}
        if time.monotonic() >= deadline:
            return {"outcome": "pending", "commit": None, "reason": f"flow run {state.name if state else 'unknown'}"}
        time.sleep(POLL_SECONDS)


def _require_request(ws: Workspace, round_number: int) -> None:
    """RoundError unless the round published a label request (there is nothing to approve before)."""
    if ws.record(round_number).queried is None:
        current = ws.current_round()
        state = "has not queried yet" if round_number == current else (
            "has not started" if round_number > current else "was closed without a label request")
        raise RoundError(f"round {round_number} has no label request, so there is nothing to approve: it {state} "
                         f"(the round in progress is {current}; `activeseg status` shows where it is)")


def pull_labels(ws: Workspace, round_number: int) -> str | None:
    """With `oracle.kind: labelstudio` and no batch staged or accepted for the round: fetch the completed
    annotations of the round's Label Studio tasks and stage them (`activeseg labels pull`: validated,
    staged or quarantined with BatchRejected). Returns what it staged, in words; None when there was
    nothing to pull (another oracle, or a batch already there). RoundError, naming how many tasks are
    done, while some are not: the batch is staged only once every task is complete."""
    record = ws.record(round_number)
    if ws.cfg.oracle.kind != "labelstudio" or record.staged is not None or record.labels_accepted is not None:
        return None
    from activeseg.workspace.exchange.formats.live import pull

    result = pull(ws, round_number)
    batch = result.get("staged")
    if batch is None:
        raise RoundError(f"round {round_number}: no label batch is staged, so there is nothing to approve yet: "
                         f"{result['message']} (or approve again)")
    unchanged = batch["reviewed_unchanged"]
    corrected = f", {len(unchanged)} of them the prediction unchanged" if unchanged is not None else ""
    return (f"pulled from Label Studio: {result['done']} of {result['tasks']} tasks done, batch "
            f"{batch['batch_sha256'][:12]} from {batch['annotator']} staged ({batch['files']} masks{corrected})")


def reject(engine: RunEngine | None, ws: Workspace, round_number: int, by: str, reason: str,
           sign: str | None = None) -> dict[str, Any]:
    """Send the round's staged (or uploaded) batch to quarantine with the reviewer's reason (`by`: a
    reviewer, signing with `sign`); the request stays open and a round run that waits for it keeps
    waiting. Adds the round run's id and state when there is one (`engine` None: a round run by hand)."""
    if not by or not reason:
        raise RoundError("a name (--by) and a reason (--reason) are required to reject a batch")
    result = ws.reject(round_number, by, reason, sign)
    claim = read_claim(ws.root)
    state = engine.state(claim.run_id) if engine and claim and claim.round_number == round_number else None
    return {**result, "flow_run_id": claim.flow_run_id if state else None, "state": state.name if state else None}


def _settle(root: Path, run_id: UUID, timeout: float = 30.0) -> None:
    """Wait for the suspended run's process on this machine to exit (about a second after suspension)."""
    deadline = time.monotonic() + timeout
    while workers.run_processes(root, run_id) and time.monotonic() < deadline:
        time.sleep(0.2)


def _no_batch_message(ws: Workspace, round_number: int) -> str:
    pending = next((p for p in ws.pending() if p["round"] == round_number), None)
    uploaded = pending["uploaded"] if pending else 0
    where = f"{ws.store.url}/labels/{round_name(round_number)}/"
    text = (f"round {round_number}: no label batch is staged (none passed validation), so there is nothing to "
            f"approve; the flow run stays suspended. Hand the masks in with `activeseg labels submit DIR "
            f"--annotator NAME --round {round_number}`")
    if uploaded:
        return text + f", or stage the {uploaded} files uploaded to {where} with `activeseg labels ingest " \
                      f"--round {round_number} --annotator NAME`."
    return text + f", or upload them to {where} and run `activeseg labels ingest --round {round_number}`."
