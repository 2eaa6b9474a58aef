"""The campaign's background worker process: its pid file and log (`.prefect/worker.pid`,
`.prefect/worker.log`), starting it from a command, stopping it with everything it started, and the
processes that execute a flow run.

The command is the Prefect side's (`python -m flows.worker ...`, built by `flows.worker.start`); this
module is the only one that writes the worker's pid file.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

from activeseg.orchestration import processes, server
from activeseg.orchestration.engine import RunEngine

FLOW_RUN_ID_ENV = "PREFECT__FLOW_RUN_ID"
"""Set by the engine in the environment of every process that executes a flow run."""


@dataclass(frozen=True)
class Worker:
    """A background worker process; `started`: this call started it."""

    pid: int
    log: Path
    started: bool


def pid_file(root: Path) -> Path:
    return server.prefect_home(root) / "worker.pid"


def worker_pid(root: Path) -> int | None:
    """The pid of the workspace's background worker, or None."""
    return processes.read_pid(pid_file(root))


def start(root: Path, command: Sequence[str], env: Mapping[str, str]) -> Worker:
    """Start `command` detached as the workspace's worker; the running worker instead when there is one."""
    log = server.prefect_home(root) / "worker.log"
    pid = worker_pid(root)
    if pid is not None:
        return Worker(pid, log, started=False)
    process = processes.spawn(command, pid_file=pid_file(root), log_file=log, env=env)
    return Worker(process.pid, log, started=True)


def stop(engine: RunEngine, root: Path, *, timeout: float = 20.0, settle_seconds: float = 30.0) -> bool:
    """Stop the background worker and every process it started; False when none was running.

    A flow-run process whose run is already Suspended or finished is first given up to `settle_seconds`
    to exit by itself: Prefect's runner cancels every run whose process it still tracks when it shuts
    down ("Runner is shutting down."), forcing the state (even a Completed run becomes Cancelled), and
    such a process lingers about a second after its state is set. Runs still executing are cancelled
    that way.
    """
    pid = worker_pid(root)
    if pid is None:
        return False
    _let_settled_runs_exit(engine, pid, settle_seconds)
    processes.stop(pid, timeout=timeout)
    pid_file(root).unlink(missing_ok=True)
    return True


def run_processes(run_id: UUID) -> list[int]:
    """The live processes on this machine that execute the flow run; empty once the run is suspended
    and its process has exited."""
    return processes.with_env(FLOW_RUN_ID_ENV, str(run_id))


def _let_settled_runs_exit(engine: RunEngine, worker: int, settle_seconds: float) -> None:
    deadline = time.monotonic() + settle_seconds
    for pid in processes.descendants(worker):
        run_id = processes.environ(pid).get(FLOW_RUN_ID_ENV)
        state = engine.state(UUID(run_id)) if run_id else None
        if state is None or not (state.suspended or state.final):
            continue
        while processes.alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
