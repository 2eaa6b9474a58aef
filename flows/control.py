"""Operating a campaign's rounds under Prefect: the one-active-round guard, status, approval and
rejection, starting rounds and the simulated annotator, and retrying a round whose worker died.

One workspace is one campaign. Its deployments are named after the workspace folder
(`al-round/<campaign>`, `simulated-annotator/<campaign>`, `campaign/<campaign>`), so several
campaigns can share one Prefect server.

The guard: a deployment concurrency limit does not keep a second round out while the first one is
suspended (Prefect releases the slot on suspension), so every round run first claims the campaign in
`.prefect/round.json` under a file lock. The claim holds while the claiming run is not in a final
state (Completed, Failed, Crashed, Cancelled); a run that finds another run's live claim ends at once
in the state "Skipped" and records `round_skipped` in the ledger. The claim is the campaign's last
round run: `status` reads it.
"""

from __future__ import annotations

import fcntl
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from prefect.states import AwaitingRetry

from activeseg.workspace.workspace import ledger as ledger_module
from activeseg.orchestration import server
from activeseg.core.util import read_json, round_name, utc_now, write_json
from activeseg.workspace.ledger import Event
from activeseg.orchestration.server import Server
from activeseg.workspace import Workspace, WorkspaceError
from flows import runtime
from flows.approval import ApprovalInput
from flows.runtime import RunState

ROUND_FLOW = "al-round"
ANNOTATOR_FLOW = "simulated-annotator"
CAMPAIGN_FLOW = "campaign"
SKIPPED = "Skipped"
CLAIM_FILE = "round.json"
ANNOTATOR_WAIT_SECONDS = 600.0
"""How long the simulated annotator waits for the round's run to suspend before giving up."""
SHUTDOWN_MESSAGE = "Runner is shutting down."
EXPIRED_MESSAGES = ("The flow was paused and never resumed.", "The flow was resuming and never resumed.")
PHASES = {"SCHEDULED": "running", "PENDING": "running", "RUNNING": "running", "CANCELLING": "running",
          "PAUSED": "awaiting_labels", "COMPLETED": "completed", "FAILED": "failed", "CRASHED": "failed",
          "CANCELLED": "failed"}


class RoundError(RuntimeError):
    """A round cannot be approved, rejected or started now; the message says why and what to do."""


@dataclass(frozen=True)
class Claim:
    """The campaign's current (or last) round run: which flow run, for which round, since when."""

    flow_run_id: str
    round: int
    trigger: str
    since: str

    @property
    def run_id(self) -> UUID:
        return UUID(self.flow_run_id)


def campaign_name(root: Path) -> str:
    """The campaign's name: its workspace folder's name, made safe for a deployment name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(root).resolve().name).strip("-") or "campaign"


def deployment_name(flow_name: str, root: Path) -> str:
    """"flow-name/deployment-name" of one of the campaign's deployments."""
    return f"{flow_name}/{campaign_name(root)}"


def require_workspace(root: Path) -> None:
    """A campaign workspace is a git repository (its .gitignore keeps the Prefect home out of git)."""
    if not (Path(root) / ".git").is_dir():
        raise WorkspaceError(f"{root}: not a git repository (create the workspace with activeseg init)")


@contextmanager
def connect(root: Path, *, start: bool = True, say: Callable[[str], None] = print) -> Iterator[Server]:
    """`runtime.connect` for a campaign workspace."""
    require_workspace(root)
    with runtime.connect(root, start=start, say=say) as srv:
        yield srv


# -- the guard -------------------------------------------------------------------------------------


def read_claim(root: Path) -> Claim | None:
    """The campaign's current (or last) round run, or None when no round run has started yet."""
    path = server.prefect_home(root) / CLAIM_FILE
    return Claim(**read_json(path)) if path.is_file() else None


def run_state(run_id: UUID) -> RunState | None:
    """The flow run's state, or None when the server does not know it."""
    try:
        return runtime.read_state(run_id)
    except ObjectNotFound:
        return None


def active_run(root: Path) -> tuple[Claim, RunState] | None:
    """The claim and state of the campaign's round run while it is not in a final state."""
    claim = read_claim(root)
    state = run_state(claim.run_id) if claim else None
    return (claim, state) if claim and state and not state.final else None


def claim_round(ws: Workspace, round_number: int | None, flow_run_id: str, trigger: str) -> dict[str, Any]:
    """Claim the campaign for this flow run and return the round it runs, or skip.

    Skipped (`{"skipped": True, "reason": ...}`, ledger `round_skipped`): another run's claim is live;
    or `trigger` is "schedule" and the campaign's stop rule holds. A repeated call from the claiming run
    returns its claim. `round_number` None: the round in progress; any other value must be that round.
    """
    from flows.campaign import stop_reason

    home = server.prefect_home(ws.root)
    with _lock(home / "round.lock"):
        claim = read_claim(ws.root)
        if claim and claim.flow_run_id == flow_run_id:
            return _claimed(ws, claim)
        active = active_run(ws.root)
        if active:
            other, state = active
            reason = f"round {other.round} is {PHASES[state.type]} in flow run {other.flow_run_id} ({state.name})"
        else:
            reason = stop_reason(ws, ws.cfg.rounds) if trigger == "schedule" else None
        current = ws.current_round()
        if reason:
            ws.ledger.append("round_skipped", active[0].round if active else current, ws.actor, {
                "trigger": trigger, "flow_run_id": flow_run_id, "reason": reason,
                "active_flow_run_id": active[0].flow_run_id if active else None}, once_key=flow_run_id)
            return {"skipped": True, "reason": f"skipped: {reason}"}
        if round_number is not None and round_number != current:
            raise WorkspaceError(f"round {round_number} cannot start: the round in progress is {current}")
        claim = Claim(flow_run_id, current, trigger, utc_now())
        write_json(home / CLAIM_FILE, asdict(claim))
        return _claimed(ws, claim)


def _claimed(ws: Workspace, claim: Claim) -> dict[str, Any]:
    return {"skipped": False, "round": claim.round, "trigger": claim.trigger, "oracle": ws.cfg.oracle.kind,
            "timeout_seconds": round(ws.cfg.oracle.timeout_hours * 3600)}


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- starting and waiting --------------------------------------------------------------------------


def start_round(root: Path, round_number: int | None = None, trigger: str = "manual") -> UUID:
    """Create a run of the campaign's round deployment (a worker executes it) and return its id."""
    parameters = {"workspace": str(Path(root).resolve()), "round": round_number, "trigger": trigger}
    tags = [campaign_name(root)] + ([round_name(round_number)] if round_number is not None else [])
    return runtime.start_run(deployment_name(ROUND_FLOW, root), parameters=parameters, tags=tags)


def start_annotator(root: Path, round_number: int, round_run_id: str, attempt: int) -> UUID:
    """Create the simulated annotator's run for one wait of a round run (once per wait)."""
    parameters = {"workspace": str(Path(root).resolve()), "round": round_number, "round_run_id": round_run_id}
    return runtime.start_run(deployment_name(ANNOTATOR_FLOW, root), parameters=parameters,
                             tags=[campaign_name(root), round_name(round_number)],
                             idempotency_key=f"{round_run_id}-labels-{attempt}")


def wait_for_round(run_id: UUID, *, until_final: bool, timeout: float,
                   say: Callable[[str], None] | None = None) -> RunState:
    """Wait until the round run is final, or (`until_final` False) also until it awaits labels.

    `say` is told every state the run passes through.
    """
    deadline = time.monotonic() + timeout
    seen = None
    while True:
        state = runtime.read_state(run_id)
        if say and state.name != seen:
            say(f"{state.name}" + (f": {state.message}" if state.message and state.final else ""))
            seen = state.name
        if state.final or (state.suspended and not until_final):
            return state
        if time.monotonic() > deadline:
            raise TimeoutError(f"flow run {run_id} is still {state.name} after {timeout:.0f} s")
        time.sleep(0.5)


def state_history(run_id: UUID | str) -> list[tuple[str, str]]:
    """(state name, UTC time) of every state the flow run went through, oldest first."""
    with get_client(sync_client=True) as client:
        states = client.read_flow_run_states(run_id)
    return [(s.name, s.timestamp.isoformat()) for s in sorted(states, key=lambda s: s.timestamp)]


def recover(root: Path) -> str | None:
    """Retry the campaign's round run when a worker died under it; what was done, or None.

    A run whose process is gone while the server still has it Running (the worker was killed), or
    that the last worker cancelled when it stopped, is set to AwaitingRetry: a worker runs it again
    from the top, finished steps come back from their persisted results. Call when a worker starts,
    inside `connect`; it checks for the run's processes on this machine only (one worker per campaign).
    """
    claim = read_claim(root)
    state = run_state(claim.run_id) if claim else None
    if state is None or Workspace.open(root).current_round() != claim.round:  # none, or its round is closed
        return None
    orphan = state.type in {"PENDING", "RUNNING", "CANCELLING"} and not runtime.run_processes(claim.run_id)
    stopped = state.type == "CANCELLED" and state.message == SHUTDOWN_MESSAGE
    if not (orphan or stopped):
        return None
    why = "its worker was killed" if orphan else "its worker stopped"
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(claim.run_id, AwaitingRetry(message=f"retried: {why} while it ran"), force=True)
    return f"round {claim.round}: flow run {claim.flow_run_id} was {state.name} ({why}); it runs again"


# -- approval and rejection ------------------------------------------------------------------------


def waiting_run(ws: Workspace, round_number: int, run_id: str | None = None) -> tuple[Claim, RunState]:
    """The flow run that waits for the labels of `round_number`; RoundError when there is none."""
    claim = read_claim(ws.root)
    if claim is None or claim.round != round_number or (run_id and claim.flow_run_id != run_id):
        last = f"the campaign's last round run is for round {claim.round}" if claim else "no round has started"
        raise RoundError(f"round {round_number}: no flow run waits for its labels ({last})")
    state = run_state(claim.run_id)
    if state is None or not state.suspended:
        now = f"{state.name}" + (f" ({state.message})" if state and state.message else "") if state else "unknown"
        raise RoundError(f"round {round_number}: flow run {claim.flow_run_id} is not waiting for labels: it is {now}")
    return claim, state


def approve(ws: Workspace, round_number: int, by: str, comment: str = "", *, run_id: str | None = None,
            wait_seconds: float = 0.0) -> dict[str, Any]:
    """Resume the round's suspended run with an approval of its accepted batch.

    Fails with RoundError, leaving the run suspended, when no valid batch of the round has been
    ingested (the workspace accepts a batch only after validating all of it) or when no run waits.
    `wait_seconds`: first wait that long for the run to suspend (the simulated annotator).
    """
    if not by:
        raise RoundError("an approver name is required (--by NAME)")
    claim, _ = _wait_for_suspension(ws, round_number, run_id, wait_seconds)
    accepted = ws.record(round_number).get("labels_accepted")
    if accepted is None:
        raise RoundError(_no_batch_message(ws, round_number))
    _settle(claim.run_id)
    approval = ApprovalInput(approved=True, approver=by, comment=comment, batch_hash=accepted["batch_sha256"])
    runtime.resume(claim.run_id, approval)
    return {"round": round_number, "flow_run_id": claim.flow_run_id, "approver": by, "comment": comment,
            "batch_sha256": accepted["batch_sha256"], "annotator": accepted["annotator"]}


def reject(ws: Workspace, round_number: int, by: str, reason: str) -> dict[str, Any]:
    """Send the batch uploaded for the round (not yet accepted) to quarantine; the request stays open
    and a round run that waits for it keeps waiting. Adds the round run's id and state when there is one."""
    if not by or not reason:
        raise RoundError("a name (--by) and a reason (--reason) are required to reject a batch")
    result = ws.reject(round_number, by, reason)
    claim = read_claim(ws.root)
    state = run_state(claim.run_id) if claim and claim.round == round_number else None
    return {**result, "flow_run_id": claim.flow_run_id if state else None, "state": state.name if state else None}


def record_approval(ws: Workspace, round_number: int, approval: dict[str, Any], accepted: dict[str, Any]) -> Event:
    """Ledger `labels_approved` for an accepted batch (once per batch)."""
    from prefect.runtime import flow_run

    regions = [r["id"] for r in ws.record(round_number)["queried"]["regions"]]
    return ws.ledger.append("labels_approved", round_number, approval["approver"], {
        "approver": approval["approver"], "comment": approval.get("comment", ""),
        "batch_sha256": accepted["batch_sha256"], "annotator": accepted["annotator"], "regions": regions,
        "flow_run_id": flow_run.get_id()}, once_key=accepted["batch_sha256"])


def describe(event: Event, sample: str | None = None) -> str:
    """One human line for an audit event (the orchestration's own types; the rest as the ledger says)."""
    d = event.data
    if event.type == "labels_approved":
        return (f"batch {d['batch_sha256'][:12]} from {d['annotator']} approved by {d['approver']}"
                + (f" ({d['comment']})" if d["comment"] else "") + f", flow run {d['flow_run_id']}")
    if event.type == "round_skipped":
        return f"{d['trigger']} trigger, flow run {d['flow_run_id']}: {d['reason']}"
    return ledger_module.summary(event, sample)


def _wait_for_suspension(ws: Workspace, round_number: int, run_id: str | None,
                         wait_seconds: float) -> tuple[Claim, RunState]:
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return waiting_run(ws, round_number, run_id)
        except RoundError:
            state = run_state(UUID(run_id)) if run_id else None
            if time.monotonic() > deadline or (state is not None and state.final):
                raise
            time.sleep(0.5)


def _settle(run_id: UUID, timeout: float = 30.0) -> None:
    """Wait for the suspended run's process on this machine to exit (about a second after suspension)."""
    deadline = time.monotonic() + timeout
    while runtime.run_processes(run_id) and time.monotonic() < deadline:
        time.sleep(0.2)


def _no_batch_message(ws: Workspace, round_number: int) -> str:
    pending = next((p for p in ws.pending() if p["round"] == round_number), None)
    uploaded = pending["uploaded"] if pending else 0
    where = f"{ws.store.url}/labels/{round_name(round_number)}/"
    text = (f"round {round_number}: no valid label batch has been ingested, so there is nothing to approve; the "
            f"flow run stays suspended. Hand the masks in with `activeseg labels submit DIR --annotator NAME "
            f"--round {round_number}`")
    if uploaded:
        return text + f", or take in the {uploaded} files uploaded to {where} with `activeseg labels ingest " \
                      f"--round {round_number} --annotator NAME`."
    return text + f", or upload them to {where} and run `activeseg labels ingest --round {round_number}`."


# -- status ----------------------------------------------------------------------------------------


def status(ws: Workspace) -> dict[str, Any]:
    """The campaign at a glance (call inside `connect`): current round, the state of its round run
    (idle, running, awaiting_labels, completed, failed) with the Prefect flow run's id, state and since
    when, the open label requests, the learning curve and whether a stop rule holds."""
    from flows.campaign import learning_curve, stop_reason

    claim = read_claim(ws.root)
    state = run_state(claim.run_id) if claim else None
    phase = PHASES[state.type] if state else "idle"
    run = None
    if claim:
        run = {"id": claim.flow_run_id, "round": claim.round, "trigger": claim.trigger, "claimed": claim.since,
               "state": state.name if state else "unknown", "type": state.type if state else None,
               "message": state.message if state else None, "since": state.since.isoformat() if state else None}
    return {"campaign": campaign_name(ws.root), "workspace": str(ws.root), "strategy": ws.cfg.query.strategy,
            "oracle": ws.cfg.oracle.kind, "current_round": ws.current_round(), "round": claim.round if claim else None,
            "state": phase, "flow_run": run, "hint": _hint(ws, phase, claim, state), "pending": _pending(ws),
            "schedule": ws.cfg.schedule.cron, "worker_pid": runtime.worker_pid(ws.root),
            "stop": stop_reason(ws, ws.cfg.rounds), "rounds": learning_curve(ws)}


def _pending(ws: Workspace) -> list[dict[str, Any]]:
    """The open label requests, each with the ids of its regions."""
    return [{**item, "region_ids": [r["id"] for r in ws.record(item["round"])["queried"]["regions"]]}
            for item in ws.pending()]


def _hint(ws: Workspace, phase: str, claim: Claim | None, state: RunState | None) -> str | None:
    if phase == "awaiting_labels" and claim:
        n = claim.round
        if "labels_accepted" in ws.record(n):
            return f"batch accepted: approve it with `activeseg approve --round {n} --by NAME`"
        return (f"waiting for the labels of round {n}: `activeseg labels submit DIR --annotator NAME --round {n}`, "
                f"then `activeseg approve --round {n} --by NAME`")
    if phase == "failed" and claim and state:
        if state.message in EXPIRED_MESSAGES:
            return (f"round {claim.round} got no approval within oracle.timeout_hours = {ws.cfg.oracle.timeout_hours:g} h "
                    "and stopped waiting; its label request stays open. `activeseg round start` runs the round again "
                    "(finished steps are reused) and waits anew.")
        return f"round {claim.round} failed: `activeseg round start` runs it again (finished steps are reused)"
    srv = server.status(ws.root)
    if phase == "running" and srv is not None and not srv.external and runtime.worker_pid(ws.root) is None:
        return "no worker is running: start one with `activeseg worker --background`"
    return None
