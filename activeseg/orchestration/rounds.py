"""Starting a campaign's round runs and the simulated annotator's, waiting for them, and retrying a
round run whose worker died."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from uuid import UUID

from activeseg.core.util import round_name
from activeseg.orchestration import workers
from activeseg.orchestration.engine import RunEngine, RunState, wait_for
from activeseg.orchestration.guard import read_claim
from activeseg.orchestration.names import ANNOTATOR_FLOW, ROUND_FLOW, campaign_name, deployment_name
from activeseg.workspace import Workspace

SHUTDOWN_MESSAGE = "Runner is shutting down."
"""The message of a run that its worker cancelled when it stopped."""


def start_round(engine: RunEngine, root: Path, round_number: int | None = None, trigger: str = "manual") -> UUID:
    """Create a run of the campaign's round deployment (a worker executes it) and return its id."""
    parameters = {"workspace": str(Path(root).resolve()), "round": round_number, "trigger": trigger}
    tags = [campaign_name(root)] + ([round_name(round_number)] if round_number is not None else [])
    return engine.start(deployment_name(ROUND_FLOW, root), parameters, tags)


def start_annotator(engine: RunEngine, root: Path, round_number: int, round_run_id: str, attempt: int) -> UUID:
    """Create the simulated annotator's run for one wait of a round run (once per wait)."""
    parameters = {"workspace": str(Path(root).resolve()), "round": round_number, "round_run_id": round_run_id}
    return engine.start(deployment_name(ANNOTATOR_FLOW, root), parameters,
                        [campaign_name(root), round_name(round_number)],
                        idempotency_key=f"{round_run_id}-labels-{attempt}")


def wait_for_round(engine: RunEngine, run_id: UUID, *, until_final: bool, timeout: float,
                   say: Callable[[str], None] | None = None) -> RunState:
    """Wait until the round run is final, or (`until_final` False) also until it awaits labels.

    `say` is told every state the run passes through.
    """
    return wait_for(engine, run_id, lambda s: s.final or (s.suspended and not until_final), timeout=timeout, say=say)


def recover(engine: RunEngine, root: Path) -> str | None:
    """Retry the campaign's round run when a worker died under it; what was done, or None.

    A run whose process is gone while the server still has it Running (the worker and the run's
    process were killed), that Crashed (the worker alone was killed: its run's process exits and
    Prefect marks the run Crashed), or that the last worker cancelled when it stopped, is set to
    AwaitingRetry: a worker runs it again from the top, finished steps come back from their persisted
    results. Call when a worker starts; it checks for the run's processes on this machine only (one
    worker per campaign).
    """
    claim = read_claim(root)
    state = engine.state(claim.run_id) if claim else None
    if state is None or Workspace.open(root).current_round() != claim.round_number:  # none, or its round is closed
        return None
    orphan = state.type in {"PENDING", "RUNNING", "CANCELLING"} and not workers.run_processes(claim.run_id)
    crashed = state.type == "CRASHED"
    stopped = state.type == "CANCELLED" and state.message == SHUTDOWN_MESSAGE
    if not (orphan or crashed or stopped):
        return None
    why = "its worker was killed" if orphan or crashed else "its worker stopped"
    engine.retry(claim.run_id, f"retried: {why} while it ran")
    return f"round {claim.round_number}: flow run {claim.flow_run_id} was {state.name} ({why}); it runs again"
