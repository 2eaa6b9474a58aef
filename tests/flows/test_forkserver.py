"""The worker's fork server ends with its worker: a worker killed (`kill -9`) during a flow run leaves no
fork server behind, and the run's process carries on. Under a real local Prefect server and a real worker."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from activeseg.orchestration import processes, server
from flows import worker
from local_prefect import local_prefect

TOY_DIR = Path(__file__).resolve().parent


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Whether `condition` holds within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_a_killed_worker_leaves_no_fork_server_and_its_run_carries_on(tmp_path: Path):
    root, folder = tmp_path / "ws", tmp_path / "run"
    folder.mkdir()
    with local_prefect(root) as engine:
        pythonpath = os.pathsep.join(p for p in (str(TOY_DIR), os.environ.get("PYTHONPATH")) if p)
        started = worker.start(root, ["busy_toy:busy_flow"], "toy", poll_seconds=1, env={"PYTHONPATH": pythonpath},
                               timeout=60)
        log = server.prefect_home(root) / "worker.log"
        engine.start("busy-flow/toy", {"folder": str(folder)}, tags=[])
        try:
            assert wait_until((folder / "pid").exists, 120), log.read_text()
            run = psutil.Process(int((folder / "pid").read_text()))
            fork_server = run.parent()  # the run's process was forked by the fork server, the worker's child
            assert fork_server.ppid() == started.pid

            os.kill(started.pid, signal.SIGKILL)
            # it exits (about 4 s: the interpreter's teardown after its imports); a zombie is init's to reap
            assert wait_until(lambda: not processes.alive(fork_server.pid), 15), log.read_text()
            assert run.status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)  # the run carries on
        finally:  # the toy run ends when told; nothing this test started is left running, pass or fail
            (folder / "stop").touch()
            if processes.alive(started.pid):  # failed before the kill: end the worker and what it started
                worker_process = psutil.Process(started.pid)
                for process in [*worker_process.children(recursive=True), worker_process]:
                    process.kill()
        assert wait_until(lambda: not processes.alive(run.pid), 30)
