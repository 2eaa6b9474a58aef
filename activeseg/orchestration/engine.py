"""The contract between the orchestration services and the workflow engine that runs a campaign's rounds.

The services (`guard`, `rounds`, `approval`, `status`, `workers`) never import Prefect: they are handed a
`RunEngine`. Its Prefect implementation is `flows.engine.PrefectEngine`; the CLI, the flows and the tasks
hand it over.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID


class ResumeError(RuntimeError):
    """A flow run could not be resumed; the message says why. The run is left as it was, except that
    a resume after its timeout makes the engine fail it at once."""


@dataclass(frozen=True)
class RunState:
    """The state of a flow run: type (SCHEDULED, RUNNING, PAUSED, COMPLETED, FAILED, CRASHED, ...),
    name ("Suspended", "Resuming", "Completed", ...), message, and since when (UTC)."""

    flow_run_id: UUID
    type: str
    name: str
    message: str | None
    since: datetime

    @property
    def suspended(self) -> bool:
        return self.type == "PAUSED" and self.name == "Suspended"

    @property
    def final(self) -> bool:
        return self.type in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


class RunEngine(Protocol):
    """What the services need from the workflow engine (whose server the caller has connected to)."""

    def state(self, run_id: UUID) -> RunState | None:
        """The run's current state, or None when the engine does not know the run."""

    def start(self, deployment: str, parameters: Mapping[str, Any], tags: Sequence[str] = (),
              idempotency_key: str | None = None) -> UUID:
        """Create a run of the deployment "flow-name/deployment-name" and return its id at once; a second
        call with the same `idempotency_key` returns the first run."""

    def resume(self, run_id: UUID, run_input: Mapping[str, Any]) -> None:
        """Resume a suspended run with `run_input` (validated by the engine against the input the run
        waits for); ResumeError when it is not suspended, timed out, or the input does not validate."""

    def history(self, run_id: UUID) -> list[tuple[str, str]]:
        """(state name, UTC time) of every state the run went through, oldest first."""

    def retry(self, run_id: UUID, message: str) -> None:
        """Force the run into AwaitingRetry: a worker runs it again from the top."""

    def find_runs(self, deployment_name: str, tags: Sequence[str] = ()) -> list[RunState]:
        """Runs of the deployment named `deployment_name` carrying all `tags`, newest first."""


def wait_for(engine: RunEngine, run_id: UUID, reached: Callable[[RunState], bool], *, timeout: float,
             say: Callable[[str], None] | None = None, poll_seconds: float = 0.5) -> RunState:
    """Poll the run until `reached(state)`; TimeoutError naming the last state after `timeout` s.

    `say` is told every state the run passes through (with the message of a final one).
    """
    deadline = time.monotonic() + timeout
    seen = None
    while True:
        state = engine.state(run_id)
        if state is None:
            raise LookupError(f"flow run {run_id} is unknown to the server")
        if say and state.name != seen:
            say(state.name + (f": {state.message}" if state.message and state.final else ""))
            seen = state.name
        if reached(state):
            return state
        if time.monotonic() > deadline:
            raise TimeoutError(f"flow run {run_id} is still {state.name} ({state.message or 'no message'}) "
                               f"after {timeout:.0f} s")
        time.sleep(poll_seconds)
