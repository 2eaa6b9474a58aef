"""The round flow under a real local Prefect server and real worker processes, with a human oracle:
suspension with no process left, approval and rejection, timeout expiry, one round at a time, a worker
killed mid-training, and the schedule. The tests share one campaign and run its rounds in order."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections import defaultdict
from pathlib import Path
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from activeseg.cli.main import main
from activeseg.orchestration import processes, server, workers
from activeseg.orchestration.guard import read_claim
from activeseg.orchestration.names import ROUND_FLOW, deployment_name
from activeseg.orchestration.rounds import start_round, wait_for_round
from activeseg.workspace.exchange.images import mask_png
from activeseg.workspace.exchange.layout import round_prefix, staged_prefix
from activeseg.loop.oracle import ground_truth
from activeseg.workspace.creation import write_params
from activeseg.workspace.workspace import Workspace
from flows import worker
from flows.engine import PrefectEngine
from local_prefect import local_prefect
from tests.conftest import TINY
from tests.people import enrol

SETTINGS = [*TINY, "query.budget_pixels=2048", "oracle.kind=human", "pretrain.enabled=true"]
STEPS = ("validate", "partition", "pretrain", "train", "query", "publish-request")  # pretrain: cached by its inputs' hash
ENGINE = PrefectEngine()


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory):
    """A campaign workspace with its local Prefect server (expired waits are checked every second)."""
    root = Workspace.init(tmp_path_factory.mktemp("campaign") / "lab", "synthetic", overrides=SETTINGS).root
    enrol(root)
    with local_prefect(root):
        yield root


def cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    """The exit status and what the command printed: its result (stdout), then its notes and errors (stderr)."""
    code = main([*args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def status_json(capsys: pytest.CaptureFixture, root: Path) -> dict:
    """`activeseg status --json` of the campaign: its stdout, parsed."""
    assert main(["status", "--json", "--workspace", str(root)]) == 0
    return json.loads(capsys.readouterr().out)


def start_worker(root: Path) -> workers.Worker:
    return worker.start(root, poll_seconds=1)


def wait(run_id: UUID, *, until_final: bool, timeout: float = 300):
    return wait_for_round(ENGINE, run_id, until_final=until_final, timeout=timeout)


def set_params(root: Path, *overrides: str) -> None:
    write_params(root / "params.yaml", root / "params.yaml", list(overrides))


def write_labels(ws: Workspace, n: int, folder: Path) -> Path:
    """A correct mask for every region requested in round `n`."""
    folder.mkdir(parents=True, exist_ok=True)
    for item in ws.record(n).queried.regions:
        region = item.region()
        (folder / f"{region.id}.png").write_bytes(mask_png(ground_truth(ws.dataset, region), ws.cfg.data.classes))
    return folder


def submit(capsys: pytest.CaptureFixture, root: Path, n: int, folder: Path) -> None:
    ws = Workspace.open(root)
    code, out = cli(capsys, "labels", "submit", str(write_labels(ws, n, folder)), "--annotator", "ann",
                    "--round", str(n), "--workspace", str(root))
    assert code == 0, out


def submit_and_approve(capsys: pytest.CaptureFixture, root: Path, n: int, folder: Path, wait: bool = True) -> None:
    """Hand in correct labels and approve them; with `wait`, until the round run has taken them in."""
    submit(capsys, root, n, folder)
    code, out = cli(capsys, "approve", "--round", str(n), "--by", "pi", "--comment", "checked", "--workspace", str(root),
                    *["--no-wait"] * (not wait))
    assert code == 0, out
    assert not wait or "approved by pi and taken in flow run" in " ".join(out.split()), out


def task_states(run_id: UUID) -> dict[str, list[str]]:
    """Per task name, the state name of each of its task runs in the flow run, oldest first (task
    runs created an instant ago, without a state yet, are left out)."""
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    states = defaultdict(list)
    for run in sorted(runs, key=lambda r: r.created):
        if run.state is not None:
            states[run.name.rsplit("-", 1)[0]].append(run.state.name)
    return dict(states)


def event_counts(root: Path, n: int) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for event in Workspace.open(root).ledger.events(round=n):
        counts[event.type] += 1
    return dict(counts)


def test_round_suspends_holds_no_process_and_resumes_on_a_new_worker(campaign: Path, capsys, tmp_path: Path):
    root = campaign
    first = start_worker(root)
    code, out = cli(capsys, "round", "start", "--wait", "--workspace", str(root))
    assert code == 0, out
    assert "Suspended" in out and "waiting for the labels of round 1" in out
    run_id = read_claim(root).run_id

    status = status_json(capsys, root)
    requested = Workspace.open(root).record(1).queried.regions
    assert (status["state"], status["current_round"], status["flow_run"]["id"]) == ("awaiting_labels", 1, str(run_id))
    assert status["flow_run"]["state"] == "Suspended"
    assert [(p["round"], p["regions"], p["uploaded"]) for p in status["pending"]] == [(1, len(requested), 0)]
    assert status["pending"][0]["region_ids"] == [r.id for r in requested]

    assert workers.stop(ENGINE, root)
    assert not processes.alive(first.pid)
    assert workers.run_processes(root, run_id) == []
    assert ENGINE.state(run_id).suspended

    code, out = cli(capsys, "approve", "--round", "1", "--by", "pi", "--workspace", str(root))
    assert code == 2
    assert "no label batch is staged" in out and "stays suspended" in out
    assert ENGINE.state(run_id).suspended

    ws = Workspace.open(root)
    for path in write_labels(ws, 1, tmp_path / "uploaded").iterdir():  # uploaded straight to the store
        ws.store.put_bytes(round_prefix("labels", 1) + path.name, path.read_bytes())
    code, out = cli(capsys, "reject", "--round", "1", "--by", "pi", "--reason", "sloppy edges", "--workspace", str(root))
    assert code == 0, out
    assert "waits for another batch" in out
    assert ENGINE.state(run_id).suspended
    assert ws.store.list(round_prefix("labels", 1)) == []
    assert [e.data["reasons"] for e in ws.ledger.events(type="batch_rejected", round=1)] == [
        ["rejected by pi: sloppy edges"]]

    submit(capsys, root, 1, tmp_path / "first")  # staged: uploaded and recorded, not taken in
    staged = Workspace.open(root).record(1).staged
    assert staged.annotator == "ann" and not (root / "labels" / "round-001").exists()
    assert status_json(capsys, root)["batch"]["sha256"] == \
        staged.batch_sha256
    code, out = cli(capsys, "reject", "--round", "1", "--by", "pi", "--reason", "coarse edges",
                    "--workspace", str(root))
    assert code == 0 and f"batch {staged.batch_sha256[:12]} rejected by pi" in out
    assert ENGINE.state(run_id).suspended and Workspace.open(root).record(1).staged is None

    second = start_worker(root)  # the suspended run resumes on a new worker
    assert second.started and second.pid != first.pid
    submit(capsys, root, 1, tmp_path / "changed")  # a staged file changed in the store: the run refuses it
    changed = Workspace.open(root).record(1).staged.batch_sha256
    key = sorted(info.key for info in ws.store.list(staged_prefix(1, changed) + "files/"))[0]
    ws.store.put_bytes(key, b"changed after staging")
    code, out = cli(capsys, "approve", "--round", "1", "--by", "bob", "--workspace", str(root))
    out = " ".join(out.split())
    assert code == 1, out
    assert f"the approval of batch {changed[:12]} by bob was not taken (flow run {run_id})" in out
    assert f"({key.rsplit('/', 1)[1]} changed)" in out
    assert wait(run_id, until_final=False).suspended  # waiting for another batch, and everyone is told
    refused = status_json(capsys, root)["pending"][0]["refused"]
    assert (refused["approver"], refused["batch_sha256"], refused["flow_run_id"]) == ("bob", changed, str(run_id))

    # the annotator hands the same batch in again and bob approves it again, in the same words: taken in
    submit(capsys, root, 1, tmp_path / "changed")
    assert Workspace.open(root).record(1).staged.batch_sha256 == changed
    code, out = cli(capsys, "approve", "--round", "1", "--by", "bob", "--workspace", str(root))
    assert code == 0 and "approved by bob and taken in flow run" in " ".join(out.split()), out
    state = wait(run_id, until_final=True, timeout=300)
    assert (state.type, state.name) == ("COMPLETED", "Completed")

    assert event_counts(root, 1) == {"access_changed": 1, "round_started": 1, "queried": 1, "request_published": 1,
                                     "batch_rejected": 2, "labels_received": 3, "labels_submitted": 3, "batch_unstaged": 1,
                                     "approval_refused": 1, "labels_committed": 1, "labels_approved": 1,
                                     "round_evaluated": 1}
    ws = Workspace.open(root)
    intake = [(e.type, e.actor) for e in ws.ledger.events(round=1)
              if e.type in ("labels_submitted", "batch_rejected", "batch_unstaged", "approval_refused",
                            "labels_approved", "labels_committed")]
    assert intake == [("batch_rejected", "pi"), ("labels_submitted", "ann"), ("batch_rejected", "pi"),
                      ("labels_submitted", "ann"), ("batch_unstaged", "bob"), ("approval_refused", "bob"),
                      ("labels_submitted", "ann"), ("labels_approved", "bob"), ("labels_committed", "ann")]
    approved = ws.ledger.last("labels_approved", round=1).data
    committed = ws.ledger.last("labels_committed", round=1).data
    assert (approved["approver"], approved["comment"], approved["annotator"]) == ("bob", "", "ann")
    assert approved["batch_sha256"] == committed["batch_sha256"] and approved["flow_run_id"] == str(run_id)
    assert ws.git("tag", "-l").split() == ["round-000", "round-001"]
    assert ws.verify().ok
    report = (root / "report.html").read_text()  # the evaluate task wrote the campaign report, also in the store
    assert report.count('class="thumbnail"') == len(requested)
    assert ws.store.get_bytes("reports/report.html") == report.encode()
    tasks = task_states(run_id)  # the flow ran three times: up to the wait, then from the top after each resume
    assert {name: tasks[name] for name in STEPS} == {name: ["Completed", "Cached", "Cached"] for name in STEPS}
    assert (tasks["ingest-labels"], tasks["evaluate"]) == (["Completed", "Cached", "Completed"], ["Completed"])
    names = [name for name, _ in ENGINE.history(run_id)]
    assert names.index("Suspended") < names.index("Resuming") < names.index("Completed") == len(names) - 1


def test_expired_wait_fails_with_a_clear_message_and_the_round_can_wait_anew(campaign: Path, capsys, tmp_path: Path):
    root = campaign
    set_params(root, "oracle.timeout_hours=0.002")  # 7 s
    code, out = cli(capsys, "round", "start", "--wait", "--workspace", str(root))
    assert code == 0, out
    expired = read_claim(root).run_id
    state = wait(expired, until_final=True, timeout=120)
    assert (state.type, state.message) == ("FAILED", "The flow was paused and never resumed.")

    status = status_json(capsys, root)
    assert (status["state"], status["round"], status["flow_run"]["message"]) == (
        "failed", 2, "The flow was paused and never resumed.")
    assert "got no approval within oracle.timeout_hours = 0.002 h" in status["hint"]
    assert [p["round"] for p in status["pending"]] == [2]  # the request stays open
    code, out = cli(capsys, "approve", "--round", "2", "--by", "pi", "--workspace", str(root))
    assert code == 2 and "is not waiting for labels: it is Failed" in out

    set_params(root, "oracle.timeout_hours=168")
    code, out = cli(capsys, "round", "start", "--wait", "--workspace", str(root))
    assert code == 0, out
    retry = read_claim(root).run_id
    assert retry != expired and ENGINE.state(retry).suspended
    assert {name: task_states(retry)[name] for name in STEPS} == {name: ["Cached"] for name in STEPS}
    submit_and_approve(capsys, root, 2, tmp_path / "labels")
    assert wait(retry, until_final=True, timeout=300).type == "COMPLETED"
    assert event_counts(root, 2)["round_started"] == 1 and event_counts(root, 2)["labels_approved"] == 1


def test_two_triggers_at_once_run_one_round(campaign: Path, capsys, tmp_path: Path):
    root = campaign
    runs = [start_round(ENGINE, root, trigger="schedule") for _ in range(2)]
    states = [wait(run, until_final=False, timeout=300) for run in runs]
    assert sorted(s.name for s in states) == ["Skipped", "Suspended"]
    waiting, skipped = (runs[0], runs[1]) if states[0].suspended else (runs[1], runs[0])
    assert read_claim(root).run_id == waiting
    message = ENGINE.state(skipped).message
    assert message == f"skipped: round 3 is awaiting_labels in flow run {waiting} (Suspended)" or message.startswith(
        f"skipped: round 3 is running in flow run {waiting}")
    events = Workspace.open(root).ledger.events(type="round_skipped")
    assert [(e.round, e.data["flow_run_id"], e.data["active_flow_run_id"]) for e in events] == [
        (3, str(skipped), str(waiting))]
    assert task_states(skipped) == {"start-round": ["Completed"]}

    code, out = cli(capsys, "round", "start", "--workspace", str(root))
    assert code == 2 and f"round 3 is awaiting_labels in flow run {waiting}" in out
    submit(capsys, root, 3, tmp_path / "labels")
    batch = Workspace.open(root).record(3).staged.batch_sha256
    code, out = cli(capsys, "status", "--workspace", str(root))  # the hash the approval form needs
    assert code == 0 and "round 3: awaiting_labels" in out and f"batch to approve: {batch} (round 3" in out
    assert status_json(capsys, root)["batch"]["sha256"] == batch
    code, out = cli(capsys, "approve", "--round", "3", "--by", "pi", "--workspace", str(root))
    assert code == 0, out
    assert wait(waiting, until_final=True, timeout=300).type == "COMPLETED"
    assert event_counts(root, 3)["round_started"] == 1


def test_worker_killed_mid_training_the_retried_run_repeats_no_finished_step(campaign: Path, capsys, tmp_path: Path):
    root = campaign
    set_params(root, "train.min_steps=32", "train.max_steps=32")  # long enough to be caught training
    run_id = start_round(ENGINE, root)
    deadline = time.monotonic() + 300
    while task_states(run_id).get("train") != ["Running"]:
        assert time.monotonic() < deadline, task_states(run_id)
        time.sleep(0.2)
    pid = workers.worker_pid(root)
    for victim in [pid, *processes.descendants(pid)]:  # a crash: no chance to clean up
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while workers.run_processes(root, run_id) or processes.alive(pid):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert ENGINE.state(run_id).type == "RUNNING"  # what the server still believes

    start_worker(root)  # finds the orphaned run and retries it
    assert wait(run_id, until_final=False, timeout=300).suspended
    submit_and_approve(capsys, root, 4, tmp_path / "labels")
    assert wait(run_id, until_final=True, timeout=300).type == "COMPLETED"

    tasks = task_states(run_id)  # killed attempt, retried attempt, re-run after the resume
    assert tasks["train"] == ["Running", "Completed", "Cached"]
    for name in ("start-round", "validate", "partition"):
        assert tasks[name] == ["Completed", "Cached", "Cached"]
    assert tasks["query"] == ["Completed", "Cached"]
    names = [name for name, _ in ENGINE.history(run_id)]
    assert "AwaitingRetry" in names and names[-1] == "Completed"
    counts = event_counts(root, 4)
    assert (counts["round_started"], counts["queried"], counts["labels_committed"]) == (1, 1, 1)
    assert "runs again" in (server.prefect_home(root) / "worker.log").read_text()


def test_schedule_creates_a_cron_schedule_and_a_finished_campaign_skips_scheduled_rounds(campaign: Path, capsys):
    root = campaign
    set_params(root, 'schedule.cron="0 6 * * 1"')
    where = ("--workspace", str(root))
    code, out = cli(capsys, "server", "status", *where)
    assert code == 0 and out.startswith(f"Prefect server at {server.status(root).url}, pid ")
    old = workers.worker_pid(root)
    assert cli(capsys, "worker", "stop", *where) == (0, "stopped the worker\n")
    assert not processes.alive(old) and cli(capsys, "worker", "status", *where)[0] == 2
    code, out = cli(capsys, "worker", "--background", "--poll-seconds", "1", *where)  # reads the new params
    assert code == 0 and out.startswith(f"worker started: pid {workers.worker_pid(root)}, log ")
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(deployment_name(ROUND_FLOW, root))
    assert [s.schedule.cron for s in deployment.schedules] == ["0 6 * * 1"]
    assert [s.active for s in deployment.schedules] == [True]

    run_id = start_round(ENGINE, root, trigger="schedule")  # as the schedule does: rounds=3 are done
    state = wait(run_id, until_final=True, timeout=300)
    assert (state.name, state.message) == ("Skipped", "skipped: round limit: round 3 was the last")
    assert Workspace.open(root).ledger.last("round_skipped").data["flow_run_id"] == str(run_id)
    code, out = cli(capsys, "status", *where)
    assert code == 0 and "round 4 finished, round 5 not started" in out and "current round" not in out
