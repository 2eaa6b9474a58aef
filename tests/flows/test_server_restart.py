"""The local Prefect server killed (SIGKILL) while a round trains and while it is suspended: the worker
starts it again on the same port, the run's process reconnects, and the round finishes as a clean one
would (each ledger event once, the requested labels, one tag per round, a linear history, `audit
verify` passing). Under a real local Prefect server and real worker processes; the rounds run in order.
A fault-matrix row (minutes): runs with `--matrix` (benchmarks/fault_matrix.py)."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from activeseg.orchestration import server
from activeseg.orchestration.rounds import start_round
from activeseg.workspace.workspace import Workspace
from local_prefect import local_prefect
from test_al_round import ENGINE, SETTINGS, cli, set_params, start_worker, submit_and_approve, task_states, wait
from tests.workspace.test_kill import ROUND_ONE
from tests.people import enrol


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory):
    root = Workspace.init(tmp_path_factory.mktemp("server") / "lab", "synthetic", overrides=SETTINGS).root
    enrol(root)
    set_params(root, "train.min_steps=200", "train.max_steps=200")
    with local_prefect(root):
        start_worker(root)
        yield root


def kill_server(root: Path) -> str:
    """SIGKILL the local server; wait until the worker has it answering again (same URL); the URL."""
    before = server.status(root)
    os.kill(before.pid, signal.SIGKILL)
    deadline = time.monotonic() + 120
    while (now := server.status(root)) is None or now.pid == before.pid:
        assert time.monotonic() < deadline, "the worker did not start the server again"
        time.sleep(0.5)
    assert now.url == before.url
    return now.url


def assert_like_a_clean_round(root: Path, n: int) -> None:
    ws = Workspace.open(root)
    assert Counter(e.type for e in ws.ledger.events(round=n) if e.type != "access_changed") == Counter(ROUND_ONE)
    ids = sorted(r.id for r in ws.record(n).requested())
    assert sorted(p.name for p in (root / "labels" / f"round-{n:03d}").iterdir()) == [f"{i}.png" for i in ids]
    assert ws.git("tag", "-l").split() == [f"round-{k:03d}" for k in range(n + 1)]
    assert ws.git("rev-list", "--merges", "HEAD") == "" and ws.git("status", "--porcelain") == ""
    assert ws.verify().ok
    log = (server.prefect_home(root) / "worker.log").read_text()
    assert log.count("did not answer; started it again") == n  # by the worker, once per kill


def test_server_killed_while_the_round_trains(campaign: Path, capsys, tmp_path: Path):
    root = campaign
    run_id = start_round(ENGINE, root)
    deadline = time.monotonic() + 300
    while task_states(run_id).get("train") != ["Running"]:
        assert time.monotonic() < deadline, task_states(run_id)
        time.sleep(0.2)
    kill_server(root)
    assert wait(run_id, until_final=False, timeout=300).suspended  # the run's process carried on
    submit_and_approve(capsys, root, 1, tmp_path / "labels")
    assert wait(run_id, until_final=True, timeout=300).type == "COMPLETED"
    assert_like_a_clean_round(root, 1)


def test_server_killed_while_the_round_is_suspended(campaign: Path, capsys, tmp_path: Path):
    root = campaign
    run_id = start_round(ENGINE, root)
    assert wait(run_id, until_final=False, timeout=300).suspended
    kill_server(root)
    assert ENGINE.state(run_id).suspended  # the database kept the suspended run
    submit_and_approve(capsys, root, 2, tmp_path / "labels")
    assert wait(run_id, until_final=True, timeout=300).type == "COMPLETED"
    assert_like_a_clean_round(root, 2)


def test_server_stop_is_refused_while_the_worker_keeps_it_up(campaign: Path, capsys):
    code, out = cli(capsys, "server", "stop", "--workspace", str(campaign))
    assert (code, out) == (2, "error: a worker is running and keeps the local server up: stop it first with "
                              "`activeseg worker stop`\n")
    assert server.status(campaign) is not None
