"""The Prefect mechanics a round relies on, with a real local server and real worker processes:
a run suspends for typed approval input with no process left for it, survives the worker being
stopped, resumes with validated input on a new worker, and does not repeat finished tasks."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from activeseg.orchestration import processes, workers
from activeseg.orchestration.engine import ResumeError, RunState, wait_for
from approval_toy import executions
from flows import worker
from flows.engine import PrefectEngine
from local_prefect import local_prefect

TOY_DIR = Path(__file__).resolve().parent
DEPLOYMENT = "approval-flow/toy"
ENGINE = PrefectEngine()
APPROVAL = {"approved": True, "approver": "ann", "comment": "looks right", "batch_hash": "b3f1"}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory):
    """A workspace with its local Prefect server (expired suspensions checked every second)."""
    ws = tmp_path_factory.mktemp("workspace")
    with local_prefect(ws):
        yield ws


def start_toy_worker(workspace: Path) -> workers.Worker:
    """The one worker spawner, serving the toy flow instead of a campaign's (it waits for the deployment)."""
    pythonpath = os.pathsep.join(p for p in (str(TOY_DIR), os.environ.get("PYTHONPATH")) if p)
    return worker.start(workspace, ["approval_toy:approval_flow"], "toy", poll_seconds=1,
                        env={"PYTHONPATH": pythonpath}, timeout=60)


def wait_for_state(run_id, names: set[str], timeout: float) -> RunState:
    return wait_for(ENGINE, run_id, lambda s: s.name in names or s.type in names, timeout=timeout)


def test_suspended_run_survives_worker_restart_and_resumes_once(workspace: Path, tmp_path: Path):
    counter_dir = str(tmp_path)
    first = start_toy_worker(workspace)
    run_id = ENGINE.start(DEPLOYMENT, {"counter_dir": counter_dir}, tags=["round-001"])

    state = wait_for_state(run_id, {"Suspended", "FAILED", "CRASHED"}, timeout=60)
    assert (state.type, state.name) == ("PAUSED", "Suspended")
    assert executions(counter_dir, "prepare") == ["ran"]
    assert executions(counter_dir, "finish") == []

    # the run's process was forked from the worker's warm process (torch imported there, not by the
    # flow), which is the worker's child; the worker recorded it
    pid, parent, warm = executions(counter_dir, "process")[0].split()
    assert warm == "True" and int(parent) != first.pid and int(parent) in processes.descendants(first.pid)
    recorded = (workspace / ".prefect" / workers.RUNS_DIR / f"{run_id}.pid").read_text().split()
    assert recorded[0] == pid
    deadline = time.monotonic() + 30
    while workers.run_processes(workspace, run_id):  # it exits about a second after it suspended
        assert time.monotonic() < deadline
        time.sleep(0.1)

    assert workers.stop(ENGINE, workspace)
    assert workers.worker_pid(workspace) is None
    assert not processes.alive(first.pid)
    assert workers.run_processes(workspace, run_id) == []
    assert ENGINE.state(run_id).name == "Suspended"

    with pytest.raises(ResumeError, match="'batch_hash' is a required property"):
        ENGINE.resume(run_id, {"approved": True, "approver": "ann"})
    assert ENGINE.state(run_id).name == "Suspended"

    ENGINE.resume(run_id, APPROVAL)
    assert (ENGINE.state(run_id).type, ENGINE.state(run_id).name) == ("SCHEDULED", "Resuming")

    second = start_toy_worker(workspace)
    assert second.started and second.pid != first.pid
    state = wait_for_state(run_id, {"COMPLETED", "FAILED", "CRASHED"}, timeout=60)
    assert state.type == "COMPLETED"

    assert executions(counter_dir, "flow_body") == ["ran", "ran"]  # Prefect re-runs the flow from the top
    assert executions(counter_dir, "prepare") == ["ran"]  # ...and the finished task comes back cached
    assert executions(counter_dir, "finish") == ["ann b3f1"]
    assert [run.flow_run_id for run in ENGINE.find_runs("toy", tags=["round-001"])] == [run_id]
    with pytest.raises(ResumeError, match="is not suspended: it is Completed"):
        ENGINE.resume(run_id, APPROVAL)


def test_expired_suspension_fails_the_run_with_a_clear_message(workspace: Path, tmp_path: Path):
    counter_dir = str(tmp_path)
    start_toy_worker(workspace)
    run_id = ENGINE.start(DEPLOYMENT, {"counter_dir": counter_dir, "timeout": 2})
    assert wait_for_state(run_id, {"Suspended", "FAILED", "CRASHED"}, timeout=60).name == "Suspended"

    state = wait_for_state(run_id, {"FAILED", "COMPLETED", "CRASHED"}, timeout=30)
    assert (state.type, state.message) == ("FAILED", "The flow was paused and never resumed.")
    with pytest.raises(ResumeError, match="is not suspended: it is Failed"):
        ENGINE.resume(run_id, APPROVAL)
    assert executions(counter_dir, "prepare") == ["ran"]
    assert executions(counter_dir, "finish") == []


