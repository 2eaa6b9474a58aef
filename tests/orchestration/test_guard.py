"""The campaign guard, the engine contract's waiting and the worker's pid file, with an in-memory engine
and a stand-in workspace (the guard reads only its root, settings, round in progress and ledger)."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from uuid import UUID, uuid4

import pytest

from activeseg.orchestration import processes, server, workers
from activeseg.orchestration.engine import wait_for
from activeseg.orchestration.guard import CLAIM_FILE, active_run, claim_round, read_claim
from activeseg.orchestration.rounds import start_round
from activeseg.orchestration.status import headline
from tests.orchestration.fake_engine import FakeEngine


class Ledger:
    def __init__(self) -> None:
        self.events: list[tuple[str, int, dict]] = []

    def append(self, type: str, round_number: int, actor: str, data: dict, once_key: str | None = None) -> None:
        self.events.append((type, round_number, data))


def workspace(root: Path) -> SimpleNamespace:
    cfg = SimpleNamespace(rounds=3, oracle=SimpleNamespace(kind="human", timeout_hours=2.0))
    return SimpleNamespace(root=root, cfg=cfg, actor="tester", ledger=Ledger(), current_round=lambda: 2)


def test_a_live_claim_skips_other_runs_and_its_own_run_gets_it_again(tmp_path: Path):
    engine, ws = FakeEngine(), workspace(tmp_path / "lab")
    first, second = str(uuid4()), str(uuid4())
    assert claim_round(engine, ws, None, first, "manual") == {
        "skipped": False, "round": 2, "trigger": "manual", "oracle": "human", "timeout_seconds": 7200}
    claim_file = json.loads((server.prefect_home(ws.root) / CLAIM_FILE).read_text())
    assert (claim_file["round"], claim_file["flow_run_id"]) == (2, first)  # the file keeps its "round" key
    engine.set(read_claim(ws.root).run_id, "PAUSED", "Suspended")
    assert active_run(engine, ws.root)[0].flow_run_id == first

    assert claim_round(engine, ws, None, second, "schedule") == {
        "skipped": True, "reason": f"skipped: round 2 is awaiting_labels in flow run {first} (Suspended)"}
    assert [(t, n, d["active_flow_run_id"]) for t, n, d in ws.ledger.events] == [("round_skipped", 2, first)]
    assert claim_round(engine, ws, None, first, "manual")["skipped"] is False

    engine.set(read_claim(ws.root).run_id, "COMPLETED", "Completed")
    assert active_run(engine, ws.root) is None
    with pytest.raises(ValueError, match="round 5 cannot start: the round in progress is 2"):
        claim_round(engine, ws, 5, second, "manual")
    assert claim_round(engine, ws, 2, second, "manual")["skipped"] is False
    assert read_claim(ws.root).flow_run_id == second


def test_two_runs_claiming_at_once_get_one_claim(tmp_path: Path):
    engine, ws = FakeEngine(), workspace(tmp_path / "lab")
    runs = [str(uuid4()) for _ in range(8)]
    for run in runs:
        engine.set(UUID(run), "RUNNING", "Running")
    results = {}
    threads = [threading.Thread(target=lambda r=run: results.update({r: claim_round(engine, ws, None, r, "manual")}))
               for run in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    claimed = [run for run, result in results.items() if not result["skipped"]]
    assert claimed == [read_claim(ws.root).flow_run_id]
    assert len(ws.ledger.events) == len(runs) - 1


def test_rounds_start_on_the_campaign_deployment(tmp_path: Path):
    engine, root = FakeEngine(), tmp_path / "my lab"
    start_round(engine, root, 3, trigger="manual")
    [(round_deployment, params, tags, key)] = engine.started
    assert (round_deployment, params["round"], tags, key) == ("al-round/my-lab", 3, ["my-lab", "round-003"], None)


def test_wait_for_reports_each_state_and_times_out_naming_the_last():
    engine, run_id = FakeEngine(), uuid4()
    engine.set(run_id, "RUNNING", "Running")
    seen = []
    with pytest.raises(TimeoutError, match=f"flow run {run_id} is still Running"):
        wait_for(engine, run_id, lambda s: s.final, timeout=0.2, say=seen.append, poll_seconds=0.05)
    assert seen == ["Running"]
    engine.set(run_id, "FAILED", "Failed", "boom")
    assert wait_for(engine, run_id, lambda s: s.final, timeout=1, say=seen.append).name == "Failed"
    assert seen == ["Running", "Failed: boom"]


def test_headline_says_which_round_finished_and_which_has_not_started():
    base = {"current_round": 3, "round": 2}
    assert headline({**base, "state": "completed"}) == "round 2 finished, round 3 not started"
    assert headline({**base, "state": "idle", "round": None, "current_round": 1}) == "round 1 not started"
    assert headline({**base, "state": "awaiting_labels", "current_round": 2}) == "round 2: awaiting_labels"


def test_the_worker_spawner_keeps_one_worker_per_workspace_and_stops_it(tmp_path: Path):
    engine, command = FakeEngine(), [sys.executable, "-c", "import time; time.sleep(60)"]
    first = workers.start(tmp_path, command, env={})
    try:
        again = workers.start(tmp_path, command, env={})
        assert first.started and not again.started and again.pid == first.pid == workers.worker_pid(tmp_path)
        assert workers.pid_file(tmp_path).read_text().strip() == str(first.pid)
    finally:
        assert workers.stop(engine, tmp_path, timeout=5)
    assert not processes.alive(first.pid) and workers.worker_pid(tmp_path) is None
    assert not workers.stop(engine, tmp_path)
