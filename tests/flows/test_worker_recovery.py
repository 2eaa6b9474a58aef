"""A worker killed alone (`kill -9` of the worker): its round run's process, forked from the worker's
fork server and not the worker's child, carries on to the suspension; the next worker leaves it alone
while it lives and resumes it after the approval, repeating no step. And `round start` refuses while a
stop rule holds unless `--force`. Under a real local Prefect server and real worker processes. (The
worker killed together with its flow-run process is tests/flows/test_al_round.py; a Crashed run is
retried by `rounds.recover`, tests/orchestration/test_recover.py.)"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from uuid import UUID

import pytest

from activeseg.orchestration import processes, server, workers
from activeseg.workspace.workspace import Workspace
from tests.people import enrol
from local_prefect import local_prefect
from test_al_round import ENGINE, SETTINGS, cli, event_counts, set_params, start_worker, submit_and_approve, \
    task_states, wait


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory):
    root = Workspace.init(tmp_path_factory.mktemp("recovery") / "lab", "synthetic", overrides=SETTINGS).root
    enrol(root)
    with local_prefect(root):
        yield root


def test_round_start_refuses_under_a_stop_rule_unless_forced_and_a_worker_killed_alone_is_recovered(
        campaign: Path, capsys: pytest.CaptureFixture, tmp_path: Path):
    root, where = campaign, ("--workspace", str(campaign))
    labeled = Workspace.open(root).label_state().revealed_pixels()  # init's regions
    set_params(root, f"campaign.budget_pixels={labeled}", "train.min_steps=400", "train.max_steps=400")
    code, out = cli(capsys, "round", "start", *where)
    assert (code, out) == (2, f"not started: a stop rule holds (label budget: {labeled} pixels labeled, budget "
                              f"{labeled}); `activeseg round start --force` starts round 1 anyway\n")
    assert not (server.prefect_home(root) / "round.json").exists()  # no round run was created

    code, out = cli(capsys, "round", "start", "--force", *where)  # also starts a background worker
    assert code == 0, out
    run_id = UUID(out.split("flow run ")[1].split()[0])
    deadline = time.monotonic() + 300
    while task_states(run_id).get("train") != ["Running"]:
        assert time.monotonic() < deadline, task_states(run_id)
        time.sleep(0.2)
    pid = workers.worker_pid(root)
    running = workers.run_processes(root, run_id)
    assert len(running) == 1
    os.kill(pid, signal.SIGKILL)  # the worker alone
    deadline = time.monotonic() + 30
    while processes.alive(pid):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert workers.run_processes(root, run_id) == running  # the run's process lives on
    assert ENGINE.state(run_id).type == "RUNNING"

    start_worker(root)  # finds the run Running with its process alive: leaves it
    assert wait(run_id, until_final=False, timeout=300).suspended
    submit_and_approve(capsys, root, 1, tmp_path / "labels")
    assert wait(run_id, until_final=True, timeout=300).type == "COMPLETED"

    # one attempt, suspended and resumed: each step finished once, then came back cached
    tasks = task_states(run_id)
    for name in ("start-round", "validate", "partition", "train", "query"):
        assert tasks[name] == ["Completed", "Cached"], tasks
    names = [name for name, _ in ENGINE.history(run_id)]
    assert "Crashed" not in names and "AwaitingRetry" not in names and names[-1] == "Completed"
    counts = event_counts(root, 1)
    assert (counts["round_started"], counts["queried"], counts["labels_committed"]) == (1, 1, 1)
    log = (server.prefect_home(root) / "worker.log").read_text()
    assert "it runs again" not in log
    assert Workspace.open(root).verify().ok
