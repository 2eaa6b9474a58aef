"""An in-memory `RunEngine`: runs and their states, set by the test."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any
from uuid import UUID, uuid4

from activeseg.orchestration.engine import RunState


class FakeEngine:
    def __init__(self) -> None:
        self.states: dict[UUID, list[RunState]] = {}
        self.started: list[tuple[str, dict[str, Any], list[str], str | None]] = []
        self.resumed: list[tuple[UUID, dict[str, Any]]] = []

    def set(self, run_id: UUID, type: str, name: str, message: str | None = None) -> None:
        state = RunState(run_id, type, name, message, datetime.now(timezone.utc))
        self.states.setdefault(run_id, []).append(state)

    def state(self, run_id: UUID) -> RunState | None:
        return self.states.get(UUID(str(run_id)), [None])[-1]

    def start(self, deployment: str, parameters: Mapping[str, Any], tags: Sequence[str] = (),
              idempotency_key: str | None = None) -> UUID:
        run_id = uuid4()
        self.started.append((deployment, dict(parameters), list(tags), idempotency_key))
        self.set(run_id, "SCHEDULED", "Scheduled")
        return run_id

    def resume(self, run_id: UUID, run_input: Mapping[str, Any]) -> None:
        self.resumed.append((run_id, dict(run_input)))
        self.set(run_id, "SCHEDULED", "Resuming")

    def history(self, run_id: UUID) -> list[tuple[str, str]]:
        return [(s.name, s.since.isoformat()) for s in self.states.get(run_id, [])]

    def retry(self, run_id: UUID, message: str) -> None:
        self.set(run_id, "SCHEDULED", "AwaitingRetry", message)

    def find_runs(self, deployment_name: str, tags: Sequence[str] = ()) -> list[RunState]:
        return []
