"""Running flows of a workspace under Prefect: connect to its server, serve a flow as a deployment
(in the foreground, or as a background worker with a pid file), start runs, read their state, resume
suspended runs with typed input.

Flows are referred to as "module:attribute" (e.g. "flows.al_round:al_round") and deployed with a
module-path entrypoint, so any process with the package installed can load them, whatever its
working directory. Run as `python -m flows.runtime --workspace DIR --flow REF --name NAME` to serve
in the foreground (that is what `start_worker` starts in the background).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable
from uuid import UUID

from prefect import Flow, serve as prefect_serve
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, FlowRunFilter, FlowRunFilterTags
from prefect.client.schemas.sorting import FlowRunSort
from prefect.deployments import run_deployment
from prefect.deployments.runner import RunnerDeployment
from prefect.exceptions import FlowPauseTimeout, NotPausedError, ObjectNotFound
from prefect.flow_runs import resume_flow_run
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_LOCAL_STORAGE_PATH,
    PREFECT_RESULTS_PERSIST_BY_DEFAULT,
    temporary_settings,
)
from prefect.types.entrypoint import EntrypointType
from pydantic import BaseModel

from activeseg.orchestration import processes
from activeseg.orchestration import server
from activeseg.orchestration.server import Server, ServerError

POLL_SECONDS = 2
"""How often a worker asks the server for runs to start (Prefect's default is 10 s)."""
FLOW_RUN_ID_ENV = "PREFECT__FLOW_RUN_ID"


class ResumeError(RuntimeError):
    """A flow run could not be resumed; the message says why. The run is left as it was, except that
    a resume after its timeout makes Prefect fail it at once."""


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


@dataclass(frozen=True)
class Worker:
    """A background worker process serving one deployment; `started`: this call started it."""

    pid: int
    log: Path
    started: bool


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


def load_flow(ref: str) -> Flow:
    """The flow object named by "module:attribute"."""
    module, _, attribute = ref.partition(":")
    flow = getattr(importlib.import_module(module), attribute, None)
    if not isinstance(flow, Flow):
        raise ValueError(f"{ref!r} does not name a Prefect flow (expected 'module:attribute')")
    return flow


def deployment(
    flow_ref: str,
    name: str,
    *,
    cron: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    concurrency_limit: int | None = None,
) -> RunnerDeployment:
    """The deployment `name` of the flow `flow_ref`, with a module-path entrypoint.

    `cron`: a schedule (standard 5-field cron, UTC). `concurrency_limit`: at most that many running
    runs of this deployment (further ones wait in AwaitingConcurrencySlot); a Suspended run does not
    count, so this does not keep a second round out while one waits for labels.
    """
    return load_flow(flow_ref).to_deployment(
        name=name,
        cron=cron,
        parameters=dict(parameters or {}),
        concurrency_limit=concurrency_limit,
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def serve(
    workspace: Path,
    flow_ref: str,
    name: str,
    *,
    cron: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    concurrency_limit: int | None = None,
    poll_seconds: float = POLL_SECONDS,
) -> None:
    """Serve the deployment in this process until SIGTERM/SIGINT: each run is executed in a subprocess.

    The schedule is not paused when the worker stops, so a restarted worker carries on.
    """
    with connect(workspace) as srv:
        os.environ.update(server.client_env(workspace, srv))  # inherited by the flow-run processes
        prefect_serve(
            deployment(flow_ref, name, cron=cron, parameters=parameters, concurrency_limit=concurrency_limit),
            pause_on_shutdown=False,
            print_starting_message=False,
            query_seconds=poll_seconds,
        )


def start_worker(
    workspace: Path,
    flow_ref: str,
    name: str,
    *,
    cron: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    concurrency_limit: int | None = None,
    poll_seconds: float = POLL_SECONDS,
    env: Mapping[str, str] | None = None,
) -> Worker:
    """Start `serve` as a detached process (pid file `.prefect/worker.pid`, log `.prefect/worker.log`).

    Returns the running worker instead when there is one. `env`: extra environment variables.
    Call inside `connect` (the worker uses the server `connect` found or started).
    """
    home = server.prefect_home(workspace)
    pid_file, log = home / "worker.pid", home / "worker.log"
    pid = processes.read_pid(pid_file)
    if pid is not None:
        return Worker(pid, log, started=False)
    command = [
        sys.executable, "-m", "flows.runtime",
        "--workspace", str(Path(workspace).resolve()),
        "--flow", flow_ref,
        "--name", name,
        "--poll-seconds", str(poll_seconds),
        "--parameters", json.dumps(dict(parameters or {})),
    ]
    if cron:
        command += ["--cron", cron]
    if concurrency_limit is not None:
        command += ["--concurrency-limit", str(concurrency_limit)]
    child_env = {**os.environ, **server.client_env(workspace, _current_server(workspace)), **(env or {})}
    process = processes.spawn(command, pid_file=pid_file, log_file=log, env=child_env)
    return Worker(process.pid, log, started=True)


def stop_worker(workspace: Path, *, timeout: float = 20.0, settle_seconds: float = 30.0) -> bool:
    """Stop the background worker and every process it started; False when none was running.

    Call inside `connect`. A flow-run process whose run is already Suspended or finished is first
    given up to `settle_seconds` to exit by itself: Prefect's runner cancels every run whose process
    it still tracks when it shuts down ("Runner is shutting down."), forcing the state (even a
    Completed run becomes Cancelled), and such a process lingers about a second after its state is
    set. Runs still executing are cancelled that way.
    """
    pid_file = server.prefect_home(workspace) / "worker.pid"
    pid = processes.read_pid(pid_file)
    if pid is None:
        return False
    _let_settled_runs_exit(pid, settle_seconds)
    processes.stop(pid, timeout=timeout)
    pid_file.unlink(missing_ok=True)
    return True


def run_processes(flow_run_id: UUID) -> list[int]:
    """The live processes on this machine that execute the flow run (Prefect marks them with
    PREFECT__FLOW_RUN_ID); empty once the run is suspended and its process has exited."""
    return processes.with_env(FLOW_RUN_ID_ENV, str(flow_run_id))


def worker_pid(workspace: Path) -> int | None:
    """The pid of the workspace's background worker, or None."""
    return processes.read_pid(server.prefect_home(workspace) / "worker.pid")


def wait_for_deployment(full_name: str, *, timeout: float = 60.0) -> UUID:
    """Wait until the deployment "flow-name/deployment-name" exists (a new worker registers it)."""
    deadline = time.monotonic() + timeout
    with _client() as client:
        while True:
            try:
                return client.read_deployment_by_name(full_name).id
            except ObjectNotFound:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"deployment {full_name!r} was not registered within {timeout:.0f} s")
                time.sleep(0.5)


def start_run(
    full_name: str,
    *,
    parameters: Mapping[str, Any] | None = None,
    tags: Sequence[str] = (),
    idempotency_key: str | None = None,
) -> UUID:
    """Create a run of the deployment "flow-name/deployment-name" and return its id at once.

    A second call with the same `idempotency_key` returns the first run instead of a new one.
    """
    _require_server()
    run = run_deployment(
        full_name,
        parameters=dict(parameters or {}),
        tags=list(tags),
        idempotency_key=idempotency_key,
        timeout=0,
    )
    return run.id


def read_state(flow_run_id: UUID) -> RunState:
    """The current state of a flow run."""
    with _client() as client:
        return _run_state(client.read_flow_run(flow_run_id))


def wait_for_state(
    flow_run_id: UUID, names: Iterable[str], *, timeout: float, poll_seconds: float = 0.5
) -> RunState:
    """Wait until the flow run's state name or type is one of `names` (e.g. {"Suspended", "COMPLETED"}).

    Raises TimeoutError naming the last state seen.
    """
    wanted = set(names)
    deadline = time.monotonic() + timeout
    while True:
        state = read_state(flow_run_id)
        if state.name in wanted or state.type in wanted:
            return state
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"flow run {flow_run_id} did not reach {sorted(wanted)} within {timeout:.0f} s: "
                f"it is {state.name} ({state.message or 'no message'})"
            )
        time.sleep(poll_seconds)


def find_runs(deployment_name: str, *, tags: Sequence[str] = ()) -> list[RunState]:
    """Runs of the deployment named `deployment_name` carrying all `tags`, newest first."""
    with _client() as client:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment_name])),
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=list(tags))) if tags else None,
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,
        )
    return [_run_state(run) for run in runs]


def resume(flow_run_id: UUID, run_input: BaseModel | Mapping[str, Any]) -> None:
    """Resume a suspended flow run with `run_input`, which Prefect validates against the input type the
    run waits for. Raises ResumeError (the run stays as it was) when the run is not suspended, has
    timed out, or the input does not validate.
    """
    _require_server()
    data = run_input.model_dump(mode="json") if isinstance(run_input, BaseModel) else dict(run_input)
    try:
        resume_flow_run(flow_run_id, run_input=data)
    except NotPausedError:
        state = read_state(flow_run_id)
        raise ResumeError(f"flow run {flow_run_id} is not suspended: it is {state.name}") from None
    except FlowPauseTimeout:
        raise ResumeError(
            f"flow run {flow_run_id} passed its approval timeout and can no longer be resumed (now Failed)"
        ) from None
    except RuntimeError as exc:
        raise ResumeError(f"flow run {flow_run_id} was not resumed: {exc}") from None


def _client() -> SyncPrefectClient:
    _require_server()
    return get_client(sync_client=True)


def _require_server() -> None:
    """Without a server chosen by `connect`, Prefect would silently start a temporary server of its
    own, with an empty database."""
    if PREFECT_API_URL.value() is None:
        raise ServerError("no Prefect server selected: call this inside flows.runtime.connect(workspace)")


def _run_state(run: Any) -> RunState:
    state = run.state
    return RunState(run.id, state.type.value, state.name, state.message or None, state.timestamp)


def _let_settled_runs_exit(worker: int, settle_seconds: float) -> None:
    deadline = time.monotonic() + settle_seconds
    for pid in processes.descendants(worker):
        run_id = processes.environ(pid).get(FLOW_RUN_ID_ENV)
        state = read_state(UUID(run_id)) if run_id else None
        if state is None or not (state.suspended or state.final):
            continue
        while processes.alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)


def _current_server(workspace: Path) -> Server:
    srv = server.status(workspace)
    if srv is None:
        raise ServerError(f"no Prefect server is running for {workspace}")
    return srv


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.runtime", description="Serve a flow of a workspace.")
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--flow", required=True, help="module:attribute")
    parser.add_argument("--name", required=True, help="deployment name")
    parser.add_argument("--cron")
    parser.add_argument("--parameters", type=json.loads, default={})
    parser.add_argument("--concurrency-limit", type=int)
    parser.add_argument("--poll-seconds", type=float, default=POLL_SECONDS)
    args = parser.parse_args(argv)
    serve(
        args.workspace,
        args.flow,
        args.name,
        cron=args.cron,
        parameters=args.parameters,
        concurrency_limit=args.concurrency_limit,
        poll_seconds=args.poll_seconds,
    )


if __name__ == "__main__":
    main()
