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

RUNS_DIR = "runs"
"""Under the Prefect home: one file per flow-run process a worker started, ``<flow run id>.pid``
(its pid and start time)."""


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
    _let_settled_runs_exit(engine, root, settle_seconds)
    processes.stop(pid, timeout=timeout)
    pid_file(root).unlink(missing_ok=True)
    return True


def record_run_process(root: Path, run_id: UUID, pid: int) -> None:
    """Record that process `pid` executes the flow run (called by the worker that started it: the process
    is forked from a warm one, so its environment does not name the run)."""
    folder = server.prefect_home(root) / RUNS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{run_id}.pid").write_text(f"{pid} {processes.start_time(pid)}\n")


def run_processes(root: Path, run_id: UUID) -> list[int]:
    """The live processes on this machine that execute the flow run (as its worker recorded them; a
    recorded pid now used by another process does not count); empty once the run is suspended and its
    process has exited."""
    try:
        pid, started = (int(v) for v in (server.prefect_home(root) / RUNS_DIR / f"{run_id}.pid").read_text().split())
    except (FileNotFoundError, ValueError):
        return []
    return [pid] if processes.alive(pid) and processes.start_time(pid) == started else []


def _let_settled_runs_exit(engine: RunEngine, root: Path, settle_seconds: float) -> None:
    deadline = time.monotonic() + settle_seconds
    for file in (server.prefect_home(root) / RUNS_DIR).glob("*.pid"):
        run_id = UUID(file.stem)
        if not run_processes(root, run_id):
            continue
        state = engine.state(run_id)
        if state is None or not (state.suspended or state.final):
            continue
        while run_processes(root, run_id) and time.monotonic() < deadline:
            time.sleep(0.1)
