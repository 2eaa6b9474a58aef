"""`rounds.recover`, which a starting worker calls: which states of the campaign's round run mean a
worker died under it (retried) and which do not (left alone), with an in-memory engine and a stand-in
workspace (recover reads only its round in progress)."""

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
    ("RUNNING", "Running", None, "its worker was killed"),  # worker and run process killed together
    ("CRASHED", "Crashed", ABORTED, "its worker was killed"),  # the worker alone: its run's process exits
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
    assert rounds.recover(engine, ws.root, grace_seconds=30).endswith("was Pending (its worker was killed); it runs again")
