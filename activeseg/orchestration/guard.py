"""The campaign guard: one active round per campaign.

A deployment concurrency limit does not keep a second round out while the first one is suspended (the
engine releases the slot on suspension), so every round run first claims the campaign in
`.prefect/round.json` under a file lock. The claim holds while the claiming run is not in a final state
(Completed, Failed, Crashed, Cancelled); a run that finds another run's live claim ends at once in the
state "Skipped" and records `round_skipped` in the ledger. The claim is the campaign's last round run:
`status` reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from filelock import FileLock

from activeseg.core.util import read_json, utc_now, write_json
from activeseg.workspace.audit import stop_reason
from activeseg.orchestration import server
from activeseg.orchestration.engine import RunEngine, RunState
from activeseg.workspace import Workspace, WorkspaceError

CLAIM_FILE = "round.json"
PHASES = {"SCHEDULED": "running", "PENDING": "running", "RUNNING": "running", "CANCELLING": "running",
          "PAUSED": "awaiting_labels", "COMPLETED": "completed", "FAILED": "failed", "CRASHED": "failed",
          "CANCELLED": "failed"}
"""The phase of a round for each state type of its run."""


class RoundError(RuntimeError):
    """A round cannot be approved, rejected or started now; the message says why and what to do."""


@dataclass(frozen=True)
class Claim:
    """The campaign's current (or last) round run: which flow run, for which round, since when."""

    flow_run_id: str
    round_number: int
    trigger: str
    since: str

    @property
    def run_id(self) -> UUID:
        return UUID(self.flow_run_id)

    def to_dict(self) -> dict[str, Any]:
        """The claim file's content (its key for the round number is "round")."""
        return {"flow_run_id": self.flow_run_id, "round": self.round_number, "trigger": self.trigger,
                "since": self.since}


def require_workspace(root: Path) -> None:
    """A campaign workspace is a git repository (its .gitignore keeps the Prefect home out of git)."""
    if not (Path(root) / ".git").is_dir():
        raise WorkspaceError(f"{root}: not a git repository (create the workspace with activeseg init)")


def read_claim(root: Path) -> Claim | None:
    """The campaign's current (or last) round run, or None when no round run has started yet."""
    path = server.prefect_home(root) / CLAIM_FILE
    if not path.is_file():
        return None
    data = read_json(path)
    return Claim(data["flow_run_id"], data["round"], data["trigger"], data["since"])


def active_run(engine: RunEngine, root: Path) -> tuple[Claim, RunState] | None:
    """The claim and state of the campaign's round run while it is not in a final state."""
    claim = read_claim(root)
    state = engine.state(claim.run_id) if claim else None
    return (claim, state) if claim and state and not state.final else None


def claim_round(engine: RunEngine, ws: Workspace, round_number: int | None, flow_run_id: str,
                trigger: str) -> dict[str, Any]:
    """Claim the campaign for this flow run and return the round it runs, or skip.

    Skipped (`{"skipped": True, "reason": ...}`, ledger `round_skipped`): another run's claim is live;
    or `trigger` is "schedule" and the campaign's stop rule holds. A repeated call from the claiming run
    returns its claim. `round_number` None: the round in progress; any other value must be that round.
    """
    home = server.prefect_home(ws.root)
    home.mkdir(parents=True, exist_ok=True)
    with FileLock(home / "round.lock"):
        claim = read_claim(ws.root)
        if claim and claim.flow_run_id == flow_run_id:
            return _claimed(ws, claim)
        active = active_run(engine, ws.root)
        if active:
            other, state = active
            reason = (f"round {other.round_number} is {PHASES[state.type]} in flow run {other.flow_run_id} "
                      f"({state.name})")
        else:
            reason = stop_reason(ws, ws.cfg.rounds) if trigger == "schedule" else None
        current = ws.current_round()
        if reason:
            ws.ledger.append("round_skipped", active[0].round_number if active else current, ws.actor, {
                "trigger": trigger, "flow_run_id": flow_run_id, "reason": reason,
                "active_flow_run_id": active[0].flow_run_id if active else None}, once_key=flow_run_id)
            return {"skipped": True, "reason": f"skipped: {reason}"}
        if round_number is not None and round_number != current:
            raise WorkspaceError(f"round {round_number} cannot start: the round in progress is {current}")
        claim = Claim(flow_run_id, current, trigger, utc_now())
        write_json(home / CLAIM_FILE, claim.to_dict())
        return _claimed(ws, claim)


def _claimed(ws: Workspace, claim: Claim) -> dict[str, Any]:
    return {"skipped": False, "round": claim.round_number, "trigger": claim.trigger, "oracle": ws.cfg.oracle.kind,
            "timeout_seconds": round(ws.cfg.oracle.timeout_hours * 3600)}
