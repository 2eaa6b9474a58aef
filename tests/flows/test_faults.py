"""Issue 13's fault matrix, the rows that go through a real Prefect flow run (a real local Prefect server
and real worker processes): the worker SIGKILLed together with its flow-run process (and every process
below it) at points inside the steps of a round, and the object store (moto S3) unreachable while a
round run publishes its request and while it pushes its DVC objects.

After each kill a new worker recovers the run (`rounds.recover`, at worker start) and the round finishes
as a clean one would: each ledger event of the round once, the requested labels, one `round-NNN` tag
per round, a linear history, a clean `git status`, `dvc status -c` in sync, `verify().ok`, the flow run
Completed. A kill point is a timing window: where the step passed it before the kill landed, the test
says so (printed, "missed") and checks the invariants anyway.

These take minutes: marked `matrix` (tests/conftest.py), they run with `--matrix`, as
benchmarks/fault_matrix.py does. The S3 test runs first, with its own workspace and server; the kill
tests share one campaign and run its rounds in order."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from uuid import UUID

import psutil
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from activeseg.orchestration import processes, workers
from activeseg.orchestration.guard import read_claim
from activeseg.orchestration.rounds import start_round
from activeseg.workspace.exchange.layout import staged_prefix
from activeseg.workspace.records import Records
from activeseg.workspace.workspace import Workspace
from local_prefect import local_prefect
from test_al_round import ENGINE, SETTINGS, cli, set_params, start_worker, submit_and_approve, task_states, wait
from tests.workspace.s3 import BUCKET, MotoServer, s3_server  # noqa: F401  (fixture)
from tests.people import enrol
from tests.workspace.test_kill import ROUND_ONE, child_running

Point = Callable[[list[int]], bool]
"""A kill point: called with the pids of the flow run's processes, True once the step is at the point."""


def assert_like_a_clean_round(root: Path, n: int, run_id: UUID) -> None:
    ws = Workspace.open(root)
    assert Counter(e.type for e in ws.ledger.events(round=n) if e.type != "access_changed") == Counter(ROUND_ONE)
    ids = sorted(r.id for r in ws.record(n).requested())
    assert sorted(p.name for p in (root / "labels" / f"round-{n:03d}").iterdir()) == [f"{i}.png" for i in ids]
    kept = staged_prefix(n, ws.record(n).labels_accepted.batch_sha256) + "files/"  # the store's copy, taken in
    assert sorted(i.key for i in ws.store.list(kept)) == [f"{kept}{i}.png" for i in ids]
    assert ws.store.list(f"labels/round-{n:03d}/") == []  # the upload folder holds nothing staged or taken in
    assert ws.git("tag", "-l").split() == [f"round-{k:03d}" for k in range(n + 1)]
    assert ws.git("rev-list", "--merges", "HEAD") == "" and ws.git("status", "--porcelain") == ""
    assert "in sync" in ws.dvc("status", "-c")
    assert ws.verify().ok
    assert ENGINE.state(run_id).name == "Completed"


# --- the object store unreachable during a round run --------------------------------------------------

S3_RETRIES = ["storage.retries=3", "storage.retry_seconds=1.0"]  # waits 1 + 2 + 4 s: 4 attempts in ~7 s


def wait_for_task(run_id: UUID, name: str, state: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while (task_states(run_id).get(name) or [None])[-1] != state:
        assert time.monotonic() < deadline, task_states(run_id)
        time.sleep(0.2)


def wait_for_record(root: Path, n: int, entry: str, timeout: float = 300) -> None:
    """Until round `n`'s record holds `entry` (a step records it last, after its outputs). Read from the
    workspace's disk, it is seen at once; the task states of the Prefect API are not fit to time an outage
    by: Prefect 3 sends them as events, which its server records later (seconds later under load)."""
    records, deadline = Records(root), time.monotonic() + timeout
    while getattr(records.read(n), entry) is None:
        assert time.monotonic() < deadline, f"round {n}: no {entry} after {timeout:.0f} s"
        time.sleep(0.05)


def retried(run_id: UUID, name: str) -> bool:
    """Whether Prefect retried the task `name` in the flow run (a retry keeps the task run: its states say so)."""
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
        states = {s.name for r in runs if r.name.rsplit("-", 1)[0] == name for s in client.read_task_run_states(r.id)}
    return bool(states & {"AwaitingRetry", "Retrying"})


def test_store_outages_during_a_round_run(tmp_path: Path, s3_server: MotoServer, capsys) -> None:
    url = f"s3://{BUCKET}/campaign"
    root = Workspace.init(tmp_path / "s3lab", "synthetic", remote=url, endpoint=s3_server.endpoint,
                          overrides=[*SETTINGS, *S3_RETRIES]).root
    enrol(root)
    with local_prefect(root):
        start_worker(root)
        run_id = start_round(ENGINE, root)

        # a short outage while the query publishes its request: the store's own retries absorb it. No step
        # before that upload reaches the store, so it goes down once the round's model is trained (not at the
        # API's "query Running": that state arrives late, under load after the upload had begun)
        wait_for_record(root, 1, "trained")
        s3_server.stop()
        selection = root / "query" / "selection.json"  # written once the regions are chosen, before the upload
        deadline = time.monotonic() + 300
        while not selection.exists():
            assert time.monotonic() < deadline, task_states(run_id)
            time.sleep(0.05)
        back = time.monotonic() + 1.5  # the upload is failing and being retried (attempts at 0, 1, 3 and 7 s)
        assert ENGINE.state(run_id).type == "RUNNING" and Workspace.open(root).record(1).queried is None
        time.sleep(max(0.0, back - time.monotonic()))  # the checks' time, however long, is part of the 1.5 s
        s3_server.start()
        assert wait(run_id, until_final=False, timeout=300).suspended
        wait_for_task(run_id, "query", "Completed", timeout=60)  # the server may record it after the suspension
        assert task_states(run_id)["query"] == ["Completed"] and not retried(run_id, "query")  # no Prefect retry
        ws = Workspace.open(root)
        assert ws.store.exists("requests/round-001/manifest.json")

        # a longer outage during the resumed run's evaluate (its DVC push): the run fails naming the store.
        # It goes down once the resumed run has taken the batch in (the ingest's last store access comes before
        # its record entry), seconds before the evaluate pushes; `approve` does not wait for the intake here
        # (it would return a poll later) and the API's task states arrive too late (under load after the push)
        submit_and_approve(capsys, root, 1, tmp_path / "labels", wait=False)
        wait_for_record(root, 1, "labels_accepted")
        s3_server.stop()
        state = wait(run_id, until_final=True, timeout=300)
        assert state.type == "FAILED", state
        assert f"{url}/dvc: the store did not answer while running dvc push" in state.message
        wait_for_task(run_id, "evaluate", "Failed", timeout=60)  # the server may record it after the run's end
        assert task_states(run_id)["ingest-labels"][-1] == "Completed"
        ws = Workspace.open(root)
        assert not ws.vcs.tag_exists(1) and ws.record(1).evaluated is None

        # the store is back: `activeseg round start` finishes the round; its new flow run finds the batch
        # already taken in, so it does not wait for another approval
        s3_server.start()
        code, out = cli(capsys, "round", "start", "--wait", "--workspace", str(root))
        assert code == 0, out
        retry = read_claim(root).run_id
        assert retry != run_id
        state = wait(retry, until_final=True, timeout=300)
        assert state.type == "COMPLETED", state
        assert "Suspended" not in [name for name, _ in ENGINE.history(retry)]
        assert_like_a_clean_round(root, 1, retry)


# --- the worker and its flow-run process SIGKILLed inside a step ----------------------------------------

@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory):
    root = Workspace.init(tmp_path_factory.mktemp("faults") / "lab", "synthetic", overrides=SETTINGS).root
    enrol(root)
    with local_prefect(root):
        start_worker(root)
        yield root


def kill_at(root: Path, run_id: UUID, point: Point, timeout: float = 300) -> bool:
    """SIGKILL the flow run's process, then the worker and every process below it, as soon as `point`
    holds (True); False when the run suspended or finished first. Waits until they are all gone."""
    worker = workers.worker_pid(root)
    deadline, refreshed, checked = time.monotonic() + timeout, 0.0, time.monotonic()
    runs: list[int] = []
    victims: list[int] = []
    while True:
        now = time.monotonic()
        assert now < deadline, task_states(run_id)
        if now - refreshed > (0.2 if not runs else 2.0):  # scanning /proc takes a while: rarely once found
            runs = workers.run_processes(root, run_id)
            victims = [*runs, *(p for r in runs for p in processes.descendants(r))]
            refreshed = time.monotonic()
        if runs and point(runs):
            break
        if now - checked > 1.0:
            state = ENGINE.state(run_id)
            if state.suspended or state.final:
                return False
            checked = now
        time.sleep(0.001)
    for victim in [*victims, worker, *processes.descendants(worker)]:  # the step first: no time to finish
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while workers.run_processes(root, run_id) or processes.alive(worker) or any(processes.alive(v) for v in victims):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return True


def request_upload(root: Path, n: int) -> Point:
    """The round's request has objects in the (local folder) store but no manifest yet."""
    folder = root.parent / f"{root.name}-remote" / "requests" / f"round-{n:03d}"

    def check(_: list[int]) -> bool:
        with contextlib.suppress(OSError):
            return any(folder.iterdir()) and not (folder / "manifest.json").exists()
        return False
    return check


def labels_before_commit(root: Path, n: int) -> Point:
    """labels/round-NNN appeared in the workspace (the ingest writes it before the round's commit)."""
    folder = root / "labels" / f"round-{n:03d}"
    return lambda _: folder.exists()


def dvc_push(_: Path, n: int) -> Point:
    """A `dvc push` runs below the flow run's process (the evaluate closing the round)."""
    def check(runs: list[int]) -> bool:
        for pid in runs:
            with contextlib.suppress(psutil.Error):
                if child_running("push")(psutil.Process(pid)):
                    return True
        return False
    return check


def hit(root: Path, n: int, point: str) -> bool:
    """Whether the kill left the step at its point (not after it)."""
    ws = Workspace.open(root)
    if point == "query-upload":
        return ws.record(n).queried is None and not ws.store.exists(f"requests/round-{n:03d}/manifest.json")
    if point == "ingest-before-commit":
        return not ws.ledger.events(type="labels_committed", round=n)
    return not ws.vcs.tag_exists(n)


def report(capsys, record_property, point: str, at_point: bool) -> None:
    """Say whether the kill landed at its point (in the output and the JUnit report: property `kill`)."""
    outcome = "killed at the point" if at_point else "missed: the step had passed the point"
    record_property("kill", outcome)
    with capsys.disabled():
        print(f"{point}: {outcome}")


def recover_and_finish(capsys, root: Path, n: int, run_id: UUID, tmp_path: Path) -> None:
    assert ENGINE.state(run_id).type == "RUNNING"  # what the server still believes
    start_worker(root)  # finds the orphaned run and retries it
    state = wait(run_id, until_final=False, timeout=300)
    if state.suspended:
        submit_and_approve(capsys, root, n, tmp_path / "labels")
        state = wait(run_id, until_final=True, timeout=300)
    assert state.type == "COMPLETED", state
    assert "AwaitingRetry" in [name for name, _ in ENGINE.history(run_id)]
    assert_like_a_clean_round(root, n, run_id)


def test_worker_killed_while_the_query_uploads_the_request(campaign: Path, capsys, tmp_path: Path, record_property):
    root, n = campaign, 1
    set_params(root, "query.budget_pixels=8192")  # 8 regions: a longer upload, a wider window to kill in
    run_id = start_round(ENGINE, root)
    killed = kill_at(root, run_id, request_upload(root, n))
    report(capsys, record_property, "query-upload", killed and hit(root, n, "query-upload"))
    assert killed
    recover_and_finish(capsys, root, n, run_id, tmp_path)
    set_params(root, "query.budget_pixels=2048")


def test_worker_killed_while_the_approved_labels_are_taken_in(campaign: Path, capsys, tmp_path: Path, record_property):
    root, n = campaign, 2
    run_id = start_round(ENGINE, root)
    assert wait(run_id, until_final=False, timeout=300).suspended
    submit_and_approve(capsys, root, n, tmp_path / "batch", wait=False)  # the kill comes while it is taken in
    killed = kill_at(root, run_id, labels_before_commit(root, n))
    report(capsys, record_property, "ingest-before-commit", killed and hit(root, n, "ingest-before-commit"))
    assert killed
    recover_and_finish(capsys, root, n, run_id, tmp_path)


def test_worker_killed_while_the_evaluate_pushes_to_dvc(campaign: Path, capsys, tmp_path: Path, record_property):
    root, n = campaign, 3
    run_id = start_round(ENGINE, root)
    assert wait(run_id, until_final=False, timeout=300).suspended
    submit_and_approve(capsys, root, n, tmp_path / "batch", wait=False)
    killed = kill_at(root, run_id, dvc_push(root, n))
    report(capsys, record_property, "evaluate-dvc-push", killed and hit(root, n, "evaluate-dvc-push"))
    assert killed
    recover_and_finish(capsys, root, n, run_id, tmp_path)
