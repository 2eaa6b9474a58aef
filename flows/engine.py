"""The Prefect implementation of the orchestration services' `RunEngine` contract, and `connect`,
which points this process's Prefect client at a workspace's server."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, FlowRunFilter, FlowRunFilterTags
from prefect.client.schemas.sorting import FlowRunSort
from prefect.deployments import run_deployment
from prefect.exceptions import FlowPauseTimeout, NotPausedError, ObjectNotFound
from prefect.flow_runs import resume_flow_run
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_LOCAL_STORAGE_PATH,
    PREFECT_RESULTS_PERSIST_BY_DEFAULT,
    temporary_settings,
)
from prefect.states import AwaitingRetry

from activeseg.orchestration import server
from activeseg.orchestration.engine import ResumeError, RunState
from activeseg.orchestration.server import Server, ServerError


@contextmanager
def connect(workspace: Path, *, start: bool = True, say: Callable[[str], None] = print) -> Iterator[Server]:
    """Point this process's Prefect client at the workspace's server for the duration of the block.

    `start`: start the local server when it is not running (and `say` so); otherwise raise
    ServerError when none answers.
    """
    srv = server.start(workspace) if start else server.status(workspace)
    if srv is None:
        raise ServerError(f"no Prefect server is running for {workspace}: run `activeseg server start`")
    if srv.started:
        say(f"Started the local Prefect server at {srv.url} (log: {srv.log}).")
    env = server.client_env(workspace, srv)
    with temporary_settings(
        updates={
            PREFECT_API_URL: srv.url,
            PREFECT_LOCAL_STORAGE_PATH: env["PREFECT_LOCAL_STORAGE_PATH"],
            PREFECT_RESULTS_PERSIST_BY_DEFAULT: True,
        }
    ):
        yield srv


class PrefectEngine:
    """`activeseg.orchestration.engine.RunEngine` on the Prefect server selected by `connect` (or, in a
    worker's flow-run process, by its environment)."""

    def state(self, run_id: UUID) -> RunState | None:
        try:
            with _client() as client:
                return _run_state(client.read_flow_run(run_id))
        except ObjectNotFound:
            return None

    def start(self, deployment: str, parameters: Mapping[str, Any], tags: Sequence[str] = (),
              idempotency_key: str | None = None) -> UUID:
        _require_server()
        run = run_deployment(deployment, parameters=dict(parameters), tags=list(tags),
                             idempotency_key=idempotency_key, timeout=0)
        return run.id

    def resume(self, run_id: UUID, run_input: Mapping[str, Any]) -> None:
        _require_server()
        try:
            resume_flow_run(run_id, run_input=dict(run_input))
        except NotPausedError:
            state = self.state(run_id)
            now = state.name if state else "unknown"
            raise ResumeError(f"flow run {run_id} is not suspended: it is {now}") from None
        except FlowPauseTimeout:
            raise ResumeError(
                f"flow run {run_id} passed its approval timeout and can no longer be resumed (now Failed)"
            ) from None
        except RuntimeError as exc:
            raise ResumeError(f"flow run {run_id} was not resumed: {exc}") from None

    def history(self, run_id: UUID) -> list[tuple[str, str]]:
        with _client() as client:
            states = client.read_flow_run_states(run_id)
        return [(s.name, s.timestamp.isoformat()) for s in sorted(states, key=lambda s: s.timestamp)]

    def retry(self, run_id: UUID, message: str) -> None:
        with _client() as client:
            client.set_flow_run_state(run_id, AwaitingRetry(message=message), force=True)

    def find_runs(self, deployment_name: str, tags: Sequence[str] = ()) -> list[RunState]:
        with _client() as client:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment_name])),
                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=list(tags))) if tags else None,
                sort=FlowRunSort.EXPECTED_START_TIME_DESC,
            )
        return [_run_state(run) for run in runs]


def _client() -> SyncPrefectClient:
    _require_server()
    return get_client(sync_client=True)


def _require_server() -> None:
    """Without a server chosen by `connect`, Prefect would silently start a temporary server of its
    own, with an empty database."""
    if PREFECT_API_URL.value() is None:
        raise ServerError("no Prefect server selected: call this inside flows.engine.connect(workspace)")


def _run_state(run: Any) -> RunState:
    state = run.state
    return RunState(run.id, state.type.value, state.name, state.message or None, state.timestamp)
