"""The Prefect mechanics a round relies on, with a real local server and real worker processes:
a run suspends for typed approval input with no process left for it, survives the worker being
stopped, resumes with validated input on a new worker, and does not repeat finished tasks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from activeseg.orchestration import processes
from approval_toy import executions
from local_prefect import local_prefect
from flows import runtime

TOY_DIR = Path(__file__).resolve().parent
DEPLOYMENT = "approval-flow/toy"
APPROVAL = {"approved": True, "approver": "ann", "comment": "looks right", "batch_hash": "b3f1"}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory):
    """A workspace with its local Prefect server (expired suspensions checked every second)."""
    ws = tmp_path_factory.mktemp("workspace")
    with local_prefect(ws, runtime.connect):
        yield ws


def start_toy_worker(workspace: Path) -> runtime.Worker:
    pythonpath = os.pathsep.join(p for p in (str(TOY_DIR), os.environ.get("PYTHONPATH")) if p)
    worker = runtime.start_worker(
        workspace, "approval_toy:approval_flow", "toy", poll_seconds=1, env={"PYTHONPATH": pythonpath}
    )
    runtime.wait_for_deployment(DEPLOYMENT, timeout=60)
    return worker


def test_suspended_run_survives_worker_restart_and_resumes_once(workspace: Path, tmp_path: Path):
    counter_dir = str(tmp_path)
    first = start_toy_worker(workspace)
    run_id = runtime.start_run(DEPLOYMENT, parameters={"counter_dir": counter_dir}, tags=["round-001"])

    state = runtime.wait_for_state(run_id, {"Suspended", "FAILED", "CRASHED"}, timeout=60)
    assert (state.type, state.name) == ("PAUSED", "Suspended")
    assert executions(counter_dir, "prepare") == ["ran"]
    assert executions(counter_dir, "finish") == []

    assert runtime.stop_worker(workspace)
    assert runtime.worker_pid(workspace) is None
    assert not processes.alive(first.pid)
    assert runtime.run_processes(run_id) == []
    assert runtime.read_state(run_id).name == "Suspended"

    with pytest.raises(runtime.ResumeError, match="'batch_hash' is a required property"):
        runtime.resume(run_id, {"approved": True, "approver": "ann"})
    assert runtime.read_state(run_id).name == "Suspended"

    runtime.resume(run_id, APPROVAL)
    assert (runtime.read_state(run_id).type, runtime.read_state(run_id).name) == ("SCHEDULED", "Resuming")

    second = start_toy_worker(workspace)
    assert second.started and second.pid != first.pid
    state = runtime.wait_for_state(run_id, {"COMPLETED", "FAILED", "CRASHED"}, timeout=60)
    assert state.type == "COMPLETED"

    assert executions(counter_dir, "flow_body") == ["ran", "ran"]  # Prefect re-runs the flow from the top
    assert executions(counter_dir, "prepare") == ["ran"]  # ...and the finished task comes back cached
    assert executions(counter_dir, "finish") == ["ann b3f1"]
    assert [run.flow_run_id for run in runtime.find_runs("toy", tags=["round-001"])] == [run_id]
    with pytest.raises(runtime.ResumeError, match="is not suspended: it is Completed"):
        runtime.resume(run_id, APPROVAL)


def test_expired_suspension_fails_the_run_with_a_clear_message(workspace: Path, tmp_path: Path):
    counter_dir = str(tmp_path)
    start_toy_worker(workspace)
    run_id = runtime.start_run(DEPLOYMENT, parameters={"counter_dir": counter_dir, "timeout": 2})
    assert runtime.wait_for_state(run_id, {"Suspended", "FAILED", "CRASHED"}, timeout=60).name == "Suspended"

    state = runtime.wait_for_state(run_id, {"FAILED", "COMPLETED", "CRASHED"}, timeout=30)
    assert (state.type, state.message) == ("FAILED", "The flow was paused and never resumed.")
    with pytest.raises(runtime.ResumeError, match="is not suspended: it is Failed"):
        runtime.resume(run_id, APPROVAL)
    assert executions(counter_dir, "prepare") == ["ran"]
    assert executions(counter_dir, "finish") == []


