"""The campaign: which failures are retried, and `make demo`'s path end to end on tiny
settings (workspace, local server, worker, rounds that suspend for the simulated annotator and resume,
the report, and nothing left running)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from prefect.states import Failed

from activeseg.orchestration import processes
from activeseg.orchestration import server
from activeseg.cli.main import main
from activeseg.workspace.storage import StoreError, StoreUnavailable
from activeseg.workspace.workspace import Workspace, WorkspaceError
from activeseg.workspace.audit import learning_curve
from tasks.steps import transient
from tests.conftest import TINY
from tests.orchestration.test_processes import with_env


def test_only_store_and_network_failures_are_retried():
    assert transient(None, None, Failed(data=StoreUnavailable("s3://b: the store did not answer while writing x")))
    assert transient(None, None, Failed(data=ConnectionResetError()))
    assert not transient(None, None, Failed(data=WorkspaceError("round 2: no trained model yet")))
    assert not transient(None, None, Failed(data=StoreError("'../x.png': not a plain object key")))


def test_demo_runs_rounds_that_suspend_and_resume_then_stops_what_it_started(tmp_path: Path, capsys,
                                                                           monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    settings = [s for s in TINY if not s.startswith(("tracking.", "rounds="))]  # MLflow on, as in the demo
    code = main(["demo", "--out", str(tmp_path), "--rounds", "2", *[a for s in settings for a in ("--set", s)]])
    out = capsys.readouterr().out
    assert code == 0, out
    root = tmp_path / "workspace"
    ws = Workspace.open(root)

    approvals = ws.ledger.events(type="labels_approved")
    assert [(e.round, e.actor, e.data["annotator"]) for e in approvals] == [
        (1, "simulated-oracle", "simulated-oracle"), (2, "simulated-oracle", "simulated-oracle")]
    report = (tmp_path / "report.md").read_text()
    for event in approvals:  # each round's run was suspended, resumed, then completed
        line = next(x for x in report.splitlines() if event.data["flow_run_id"] in x)
        states = line.split(": ", 2)[2].split(" -> ")
        assert states.index("Suspended") < states.index("Resuming") < states.index("Completed") == len(states) - 1
    curve = learning_curve(ws)
    assert [row["round"] for row in curve] == [1, 2]
    assert curve[0]["labeled_pixel_fraction"] < curve[1]["labeled_pixel_fraction"]
    for row in curve:
        assert f"| {row['round']} | {row['labeled_pixel_fraction']:.2%} |" in report
    assert "campaign Completed: stopped: round limit: round 2 was the last" in out
    region = ws.ledger.events(type="queried")[0].data["regions"][0]
    assert f"## Audit history of region {region}" in report
    audit = [line for line in out.splitlines() if "  round 1  " in line]
    assert [line.split("  ")[2].split(" by ")[0] for line in audit] == [
        "queried", "request_published", "labels_approved", "labels_committed"]
    assert ws.git("tag", "-l").split() == ["round-000", "round-001", "round-002"]
    assert ws.verify().ok

    tracking = f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"
    assert f"MLflow runs: {tracking}" in out
    client = MlflowClient(tracking_uri=tracking)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert sorted(r.info.run_name for r in runs) == [  # control: the queried and control regions' Dice
        "pretrain", "round-001-control", "round-001-evaluate", "round-001-train", "round-002-control", "round-002-evaluate",
        "round-002-train"]
    assert (tmp_path / "learning_curve.png").is_file()

    home = server.prefect_home(root)
    assert processes.read_pid(home / "server.pid") is None and processes.read_pid(home / "worker.pid") is None
    assert with_env("PREFECT_HOME", str(home)) == []  # no server, worker or flow run left
