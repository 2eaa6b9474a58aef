"""Starting a campaign's round runs, waiting for them, answering the simulated annotator's waits, and
retrying a round run whose worker died."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from uuid import UUID

from activeseg.core.util import round_name
from activeseg.loop.oracle import SIMULATED
from activeseg.orchestration import approval, server, workers
from activeseg.orchestration.engine import RunEngine, RunState, wait_for
from activeseg.orchestration.guard import read_claim
from activeseg.orchestration.names import ROUND_FLOW, campaign_name, deployment_name
from activeseg.workspace import Workspace

SHUTDOWN_MESSAGE = "Runner is shutting down."
"""The message of a run that its worker cancelled when it stopped."""


SERVER_LOST = ("ConnectError", "ConnectTimeout", "ReadTimeout", "RemoteProtocolError")
"""In a failed run's message: the run's process lost the server (the HTTP client's error names)."""


def start_round(engine: RunEngine, root: Path, round_number: int | None = None, trigger: str = "manual") -> UUID:
    """Create a run of the campaign's round deployment (a worker executes it) and return its id."""
    parameters = {"workspace": str(Path(root).resolve()), "round": round_number, "trigger": trigger}
    tags = [campaign_name(root)] + ([round_name(round_number)] if round_number is not None else [])
    return engine.start(deployment_name(ROUND_FLOW, root), parameters, tags)


SIMULATED_COMMENT = "automatic approval (oracle: simulated)"


def answer_simulated(engine: RunEngine, root: Path) -> str | None:
    """The simulated annotator (`oracle.kind: simulated`), as a person would act: once the round's label
    request is published, submit its ground truth (`activeseg labels simulate`: validated, uploaded,
    staged) unless a batch is staged already; once the round run is suspended waiting for labels, resume
    it with an approval of the staged batch (`activeseg approve`). What was done, or None. A worker calls
    this every second or so, so the annotator costs no process start, its imports (Great Expectations)
    are paid once per worker, not once per round, and it labels while the round's process suspends."""
    claim = read_claim(root)
    state = engine.state(claim.run_id) if claim else None
    if state is None or state.final:
        return None
    ws, n = Workspace.open(root), claim.round_number
    record = ws.record(n)
    if ws.cfg.oracle.kind != "simulated" or record.queried is None or record.labels_accepted is not None:
        return None
    if record.staged is None:
        ws.simulate_labels(n)
    if not state.suspended:
        return None
    done = approval.approve(engine, ws, n, SIMULATED, SIMULATED_COMMENT, run_id=claim.flow_run_id, wait_seconds=0)
    return f"round {n}: approved the simulated annotator's batch {done['batch_sha256'][:12]}"


def wait_for_round(engine: RunEngine, run_id: UUID, *, until_final: bool, timeout: float,
                   say: Callable[[str], None] | None = None) -> RunState:
    """Wait until the round run is final, or (`until_final` False) also until it awaits labels.

    `say` is told every state the run passes through.
    """
    return wait_for(engine, run_id, lambda s: s.final or (s.suspended and not until_final), timeout=timeout, say=say)


def recover(engine: RunEngine, root: Path, grace_seconds: float = 0.0) -> str | None:
    """Retry the campaign's round run when a worker died under it; what was done, or None.

    A run whose process is gone while the server still has it Running (the run's process was killed),
    that Crashed (its process ended in a way Prefect saw), that the last worker cancelled when it
    stopped, or that failed because the server did not answer (down longer than the client's retries),
    is set to AwaitingRetry: a worker runs it again from the top, finished steps come back from their
    persisted results. Call when a worker starts, and while it runs (`tend`) with `grace_seconds`: a run counts
    as having lost its process only that long after it entered its state (a worker sets Pending just
    before it starts the run's process). It checks for the run's processes on this machine only (one
    worker per campaign).
    """
    claim = read_claim(root)
    state = engine.state(claim.run_id) if claim else None
    if state is None or Workspace.open(root).current_round() != claim.round_number:  # none, or its round is closed
        return None
    settled = (datetime.now(timezone.utc) - state.since).total_seconds() >= grace_seconds
    orphan = (state.type in {"PENDING", "RUNNING", "CANCELLING"} and settled
              and not workers.run_processes(root, claim.run_id))
    crashed = state.type == "CRASHED"
    stopped = state.type == "CANCELLED" and state.message == SHUTDOWN_MESSAGE
    lost = state.type == "FAILED" and any(error in (state.message or "") for error in SERVER_LOST)
    if not (orphan or crashed or stopped or lost):
        return None
    why = ("its process was killed" if orphan or crashed else "its worker stopped" if stopped
           else "the Prefect server did not answer")
    engine.retry(claim.run_id, f"retried: {why} while it ran")
    return f"round {claim.round_number}: flow run {claim.flow_run_id} was {state.name} ({why}); it runs again"


def tend(engine: RunEngine, root: Path, url: str, grace_seconds: float = 30.0) -> list[str]:
    """What a worker checks every few seconds: the workspace's local server at `url` is started again
    when it stopped answering (on the same port, so the run processes reconnect), then the round run
    is retried if it was lost (`recover`). Returns what was done."""
    done = []
    if server.restart(root, url):
        done.append(f"the local Prefect server at {url} did not answer; started it again")
    retried = recover(engine, root, grace_seconds)
    return done + ([retried] if retried else [])
