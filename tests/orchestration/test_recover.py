"""`rounds.recover`, which a starting worker calls: which states of the campaign's round run mean a
worker died under it (retried) and which do not (left alone); and `rounds.answer_simulated`, with which
a worker approves the simulated annotator's staged batch of a suspended round. With an in-memory engine
and a stand-in workspace (they read only its round in progress, settings and round record)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from uuid import uuid4

import pytest

from activeseg.orchestration import rounds
from activeseg.orchestration.guard import claim_round
from tests.orchestration.fake_engine import FakeEngine
from tests.orchestration.test_guard import workspace

ABORTED = "Execution was aborted by Python system exit call."


@pytest.mark.parametrize("type, name, message, why", [
    ("RUNNING", "Running", None, "its process was killed"),  # worker and run process killed together
    ("CRASHED", "Crashed", ABORTED, "its process was killed"),  # the run's process ended, Prefect saw it
    ("CANCELLED", "Cancelled", rounds.SHUTDOWN_MESSAGE, "its worker stopped"),
    ("FAILED", "Failed", "Flow run encountered an exception: ConnectError: [Errno 111] Connection refused",
     "the Prefect server did not answer"),  # down longer than the client retries
    ("FAILED", "Failed", "The flow was paused and never resumed.", None),
    ("FAILED", "Failed", "Flow run encountered an exception: ModelCollapsed: ...", None),
    ("CANCELLED", "Cancelled", "cancelled by a person", None),
    ("PAUSED", "Suspended", None, None),
    ("COMPLETED", "Completed", None, None),
])
def test_a_run_whose_worker_died_is_retried_and_no_other(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           type: str, name: str, message: str | None,
                                                           why: str | None):
    engine, ws = FakeEngine(), workspace(tmp_path / "lab")
    monkeypatch.setattr(rounds, "Workspace", SimpleNamespace(open=lambda root: ws))
    run_id = uuid4()
    claim_round(engine, ws, None, str(run_id), "manual")
    engine.set(run_id, type, name, message)
    done = rounds.recover(engine, ws.root)
    if why is None:
        assert done is None and engine.state(run_id).name == name
    else:
        assert done == f"round 2: flow run {run_id} was {name} ({why}); it runs again"
        state = engine.state(run_id)
        assert (state.name, state.message) == ("AwaitingRetry", f"retried: {why} while it ran")


def test_a_run_of_a_closed_round_is_left_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    engine, ws = FakeEngine(), workspace(tmp_path / "lab")
    run_id = uuid4()
    claim_round(engine, ws, None, str(run_id), "manual")
    ws.current_round = lambda: 3  # round 2 was closed after its run crashed
    monkeypatch.setattr(rounds, "Workspace", SimpleNamespace(open=lambda root: ws))
    engine.set(run_id, "CRASHED", "Crashed", ABORTED)
    assert rounds.recover(engine, ws.root) is None


def test_while_a_worker_runs_a_run_counts_as_lost_only_after_the_grace_period(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch):
    engine, ws = FakeEngine(), workspace(tmp_path / "lab")
    monkeypatch.setattr(rounds, "Workspace", SimpleNamespace(open=lambda root: ws))
    run_id = uuid4()
    claim_round(engine, ws, None, str(run_id), "manual")
    engine.set(run_id, "PENDING", "Pending")  # just now: the worker is starting its process
    assert rounds.recover(engine, ws.root, grace_seconds=30) is None
    old = engine.state(run_id)
    engine.states[run_id][-1] = old.__class__(run_id, "PENDING", "Pending", None, old.since - timedelta(seconds=31))
    assert rounds.recover(engine, ws.root, grace_seconds=30).endswith("was Pending (its process was killed); it runs again")


def simulated_workspace(root: Path, kind: str, staged: bool) -> SimpleNamespace:
    """A stand-in workspace whose `simulate_labels` stages a batch (and counts its calls)."""
    ws = workspace(root)
    ws.cfg.oracle.kind = kind
    record = SimpleNamespace(queried=SimpleNamespace(request="requests/round-002/"), staged=None, labels_accepted=None)
    ws.record, ws.simulated = (lambda n: record), []

    def simulate_labels(n: int) -> None:
        ws.simulated.append(n)
        record.staged = SimpleNamespace(batch_sha256="ab" * 32, annotator="simulated-oracle")

    ws.simulate_labels = simulate_labels
    if staged:
        simulate_labels(2)
    return ws


@pytest.mark.parametrize("kind, type, name, staged, simulated, answered", [
    ("simulated", "PAUSED", "Suspended", False, [2], True),  # the worker submits the ground truth, approves
    ("simulated", "PAUSED", "Suspended", True, [2], True),  # staged already (`labels simulate`): approved as is
    ("simulated", "RUNNING", "Running", False, [2], False),  # request out: labeled now, approved once suspended
    ("simulated", "COMPLETED", "Completed", False, [], False),  # a finished run waits for nothing
    ("human", "PAUSED", "Suspended", False, [], False),  # a person's round waits for a person
    ("human", "PAUSED", "Suspended", True, [2], False),  # ... and a person's approval
])
def test_a_worker_answers_only_a_suspended_simulated_round(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             kind: str, type: str, name: str, staged: bool,
                                                             simulated: list[int], answered: bool):
    engine, ws = FakeEngine(), simulated_workspace(tmp_path / "lab", kind, staged)
    monkeypatch.setattr(rounds, "Workspace", SimpleNamespace(open=lambda root: ws))
    run_id = uuid4()
    claim_round(engine, ws, None, str(run_id), "manual")
    engine.set(run_id, type, name)
    done = rounds.answer_simulated(engine, ws.root)
    assert ws.simulated == simulated
    if not answered:
        assert done is None and engine.resumed == []
        return
    assert done == f"round 2: approved the simulated annotator's batch {'ab' * 6}"
    assert engine.resumed == [(run_id, {"approved": True, "approver": "simulated-oracle",
                                        "comment": rounds.SIMULATED_COMMENT, "batch_hash": "ab" * 32})]
    assert rounds.answer_simulated(engine, ws.root) is None and ws.simulated == simulated  # resumed: done once


def test_the_simulated_annotator_waits_for_the_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    engine, ws = FakeEngine(), simulated_workspace(tmp_path / "lab", "simulated", staged=False)
    ws.record(2).queried = None  # the round is still training
    monkeypatch.setattr(rounds, "Workspace", SimpleNamespace(open=lambda root: ws))
    run_id = uuid4()
    claim_round(engine, ws, None, str(run_id), "manual")
    engine.set(run_id, "RUNNING", "Running")
    assert rounds.answer_simulated(engine, ws.root) is None and ws.simulated == []
