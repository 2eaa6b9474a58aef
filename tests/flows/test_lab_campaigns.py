"""Two campaigns on one `make lab` stack (infra/lab/stack.py), and the stack's faults (issue 24).

One stack for the module (PostgreSQL, the Prefect server on it, MLflow on it with artifacts in moto S3,
moto's S3 server, a Dask scheduler with 2 workers); two campaign workspaces, `campaign-a` and
`campaign-b` (another strategy), on the same Prefect server, MLflow server, bucket (prefixes
`s3://activeseg/campaign-a`, `.../campaign-b`) and Dask cluster (`query.cluster`), each with its own
worker, `oracle.kind: human`. The tests run in order and carry the campaigns' rounds along:

1. round 1 of both runs and suspends at once; each `status` and each Prefect deployment shows only its
   own run; approving A resumes A only (B stays suspended), `model list` of each shows only its model;
   a third workspace with a taken campaign name is refused a worker;
2. PostgreSQL restarted (`stack.py restart postgres`) while round 2 of both is suspended: A's round
   resumes on approval and completes;
3. the MLflow server down from B's approval on: its evaluate retries (activeseg.model.tracking.retrying)
   and logs once when the server is back: one evaluate run, one model version for the round;
4. a Dask worker of the stack killed mid-query: the same selection as in one process (the local
   test_cluster_scoring row, on the stack's cluster).

Opt-in: `pytest --lab tests/flows/test_lab_campaigns.py` (about 6 minutes on 2 cores, 8 when they are busy). With --lab, xdist
hands out whole modules (tests/conftest.py), so the tests share the module's stack on one xdist worker.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import tempfile
import time
from pathlib import Path
from uuid import UUID

import pytest

from activeseg.model.tracking import CAMPAIGN_TAG, ROUND_TAG
from activeseg.orchestration import processes, workers
from activeseg.orchestration.guard import read_claim
from activeseg.orchestration.rounds import start_round
from activeseg.orchestration.server import ServerError
from activeseg.workspace.workspace import Workspace
from flows import worker
from flows.engine import PrefectEngine, connect
from test_al_round import SETTINGS, cli, status_json, submit_and_approve, task_states, wait
from test_cluster_scoring import query  # noqa: F401  (fixture: one query of the tiny pool)
from tests.people import enrol
from tests.test_lab_stack import SERVICES, exported, listeners, stack

pytestmark = pytest.mark.lab

ENGINE = PrefectEngine()
NAMES = ("campaign-a", "campaign-b")
FAST_MLFLOW_CLIENT = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
"""In the workers: MLflow's own HTTP retries short, so an outage reaches activeseg's retries
(activeseg.model.tracking.retrying) within seconds instead of MLflow's ~4 minutes."""


@pytest.fixture(scope="module")
def lab():
    """The stack, started once for the module in a folder of its own (free ports); its environment is
    this process's for the module. At teardown: stopped, no process of it alive and no port listening."""
    # Not tmp_path: its parents are 0700, and PostgreSQL runs as the `postgres` user, who must reach the folder.
    folder = Path(tempfile.mkdtemp(prefix="activeseg-lab-", dir="/tmp"))
    began = time.monotonic()
    try:
        started = stack(folder, "start", "--free-ports")
        assert started.returncode == 0, started.stdout + started.stderr
        print(f"\nlab stack started in {time.monotonic() - began:.1f} s")
        env = exported(folder / "env.sh")
        with pytest.MonkeyPatch.context() as patch:
            for key in [k for k in os.environ if k.startswith(("PREFECT_", "MLFLOW_", "AWS_"))]:
                patch.delenv(key)
            for key, value in env.items():
                patch.setenv(key, value)
            yield folder, env
    finally:
        pids = {}
        for name in SERVICES:
            with_pid = folder / "pids" / f"{name}.pid"
            if with_pid.exists():
                pids[name] = int(with_pid.read_text())
        tree = {pid for root in pids.values() for pid in (root, *processes.descendants(root))}
        ports = json.loads((folder / "ports.json").read_text()) if (folder / "ports.json").exists() else {}
        stopped = stack(folder, "stop", timeout=120)
        shutil.rmtree(folder, ignore_errors=True)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert not [pid for pid in tree if processes.alive(pid)]
        assert not [pid for pid in listeners() if pid in tree]
        assert not [port for port in ports.values() if port in {int(a.rsplit(":", 1)[1])
                                                                for found in listeners().values() for a in found}]


@pytest.fixture(scope="module")
def campaigns(lab, tmp_path_factory: pytest.TempPathFactory):
    """Two workspaces on the stack, each with its worker; the workers stopped at teardown (no process left)."""
    _, env = lab
    folder = tmp_path_factory.mktemp("lab-campaigns")
    shared = [*SETTINGS, "tracking.mlflow=true", f"tracking.uri={env['ACTIVESEG_LAB_TRACKING_URI']}",
              f"query.cluster={env['ACTIVESEG_LAB_CLUSTER']}"]
    # B: another strategy, and no control regions, so that taking its labels in logs nothing to MLflow (the
    # control check's run) and the MLflow outage of the third test reaches its evaluate first
    own = {"campaign-a": [], "campaign-b": ["query.strategy=random", "query.control_fraction=0"]}
    roots = {name: Workspace.init(folder / name, "synthetic", remote=f"s3://{env['ACTIVESEG_LAB_BUCKET']}/{name}",
                                  endpoint=env["ACTIVESEG_LAB_S3_ENDPOINT"], overrides=[*shared, *own[name]]).root
             for name in NAMES}
    for root in roots.values():
        enrol(root)  # ann and pi, whom test_al_round's helpers name, in the access file
    started: list[int] = []
    with connect(roots["campaign-a"], start=False, say=lambda _: None):
        try:
            for root in roots.values():
                started.append(worker.start(root, poll_seconds=1, env=FAST_MLFLOW_CLIENT).pid)
            yield roots
        finally:
            for root in roots.values():
                workers.stop(ENGINE, root, settle_seconds=5)
    assert not [pid for pid in started if processes.alive(pid)]


def suspended(run_id: UUID) -> bool:
    return wait(run_id, until_final=False, timeout=300).suspended


def registry(root: Path):
    from activeseg.model.tracking import ModelRegistry

    return ModelRegistry(Workspace.open(root).tracker())


def model_list(capsys, root: Path) -> str:
    code, out = cli(capsys, "model", "list", "--workspace", str(root))
    assert code == 0, out
    return out


def test_two_campaigns_run_and_suspend_at_once_and_stay_apart(lab, campaigns, capsys, tmp_path: Path):
    a, b = campaigns["campaign-a"], campaigns["campaign-b"]
    runs = {name: start_round(ENGINE, root) for name, root in campaigns.items()}
    assert all(suspended(run) for run in runs.values())  # both suspended at once, awaiting labels

    for name, root in campaigns.items():
        other = runs[NAMES[1 - NAMES.index(name)]]
        status = status_json(capsys, root)
        assert (status["campaign"], status["state"], status["flow_run"]["id"]) == (name, "awaiting_labels",
                                                                                   str(runs[name]))
        assert str(other) not in json.dumps(status)
        assert [r.flow_run_id for r in ENGINE.find_runs(name)] == [runs[name]]  # its deployment: its run only
        ws = Workspace.open(root)
        assert ws.store.url == f"s3://activeseg/{name}"
        assert ws.store.exists("requests/round-001/manifest.json")

    # approving A resumes A only
    submit_and_approve(capsys, a, 1, tmp_path / "a1")
    assert wait(runs["campaign-a"], until_final=True).type == "COMPLETED"
    assert ENGINE.state(runs["campaign-b"]).suspended and read_claim(b).run_id == runs["campaign-b"]
    assert status_json(capsys, b)["state"] == "awaiting_labels"
    assert "activeseg-campaign-a" in model_list(capsys, a)
    assert "no model registered in 'activeseg-campaign-b'" in model_list(capsys, b)

    submit_and_approve(capsys, b, 1, tmp_path / "b1")
    assert wait(runs["campaign-b"], until_final=True).type == "COMPLETED"
    for name, root in campaigns.items():
        versions = registry(root).versions()
        assert [(v.tags[ROUND_TAG], v.tags[CAMPAIGN_TAG]) for v in versions] == [("1", name)]
        assert f"registered model activeseg-{name}" in model_list(capsys, root)
        assert Workspace.open(root).vcs.tag_exists(1)

    # the bucket: each campaign's objects under its own prefix only
    import boto3

    _, env = lab
    s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="activeseg")
            for o in page.get("Contents", [])]
    assert keys and {key.split("/", 1)[0] for key in keys} == set(NAMES)

    # a third workspace whose folder has a taken campaign name gets no worker
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        with pytest.raises(ServerError, match="the campaign name 'campaign-a' is taken"):
            worker.check_campaign_name(client, tmp_path / "elsewhere" / "campaign-a")


def test_a_suspended_round_resumes_after_postgres_restarts(lab, campaigns, capsys, tmp_path: Path):
    folder, _ = lab
    a, b = campaigns["campaign-a"], campaigns["campaign-b"]
    runs = {name: start_round(ENGINE, root) for name, root in campaigns.items()}  # B's: for the MLflow test
    assert all(suspended(run) for run in runs.values())

    restarted = stack(folder, "restart", "postgres")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert "restarted postgres" in restarted.stdout
    assert ENGINE.state(runs["campaign-a"]).suspended  # the Prefect server reconnected to its database

    submit_and_approve(capsys, a, 2, tmp_path / "a2")
    state = wait(runs["campaign-a"], until_final=True)
    assert state.type == "COMPLETED", state
    assert [v.tags[ROUND_TAG] for v in registry(a).versions()] == ["1", "2"]
    assert ENGINE.state(runs["campaign-b"]).suspended and read_claim(b).round_number == 2


def test_mlflow_down_during_evaluate_is_retried_and_logs_once(lab, campaigns, capsys, tmp_path: Path):
    folder, _ = lab
    b = campaigns["campaign-b"]
    run_id = read_claim(b).run_id
    assert ENGINE.state(run_id).suspended  # round 2, started by the previous test
    log = workers.pid_file(b).with_name("worker.log")
    seen = len(log.read_text(errors="replace"))

    stopped = stack(folder, "stop", "mlflow")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    submit_and_approve(capsys, b, 2, tmp_path / "b2", wait=False)
    retrying = re.compile(r"Task run 'evaluate-\w+' - MLflow tracking server \S+: no answer while")
    deadline = time.monotonic() + 180
    while not retrying.search(log.read_text(errors="replace")[seen:]):  # the evaluate is retrying
        assert time.monotonic() < deadline, task_states(run_id)
        time.sleep(0.5)
    assert task_states(run_id)["evaluate"] == ["Running"]
    assert stack(folder, "start").returncode == 0  # starts what is down: MLflow

    state = wait(run_id, until_final=True)
    assert state.type == "COMPLETED", (state, task_states(run_id))
    ws = Workspace.open(b)
    tracker = ws.tracker()
    client = tracker.client()
    experiment = client.get_experiment_by_name("activeseg-campaign-b").experiment_id
    evaluate_runs = client.search_runs([experiment], "tags.`activeseg.step` = 'evaluate' and tags.`activeseg.round` = '2'")
    assert len(evaluate_runs) == 1 and evaluate_runs[0].info.status == "FINISHED"
    assert evaluate_runs[0].data.metrics  # logged once the server was back
    assert [v.tags[ROUND_TAG] for v in registry(b).versions()] == ["1", "2"]  # no duplicate version
    assert ws.record(2).evaluated.mlflow_run_id == evaluate_runs[0].info.run_id


def test_a_stack_dask_worker_killed_mid_query_changes_nothing(lab, campaigns, query):
    """tests/flows/test_cluster_scoring.py's row, on the stack's Dask cluster (a nanny per worker)."""
    from distributed import Client

    from activeseg.model.pool_scoring import local_shards
    from tasks.scoring import dask_shards
    from test_cluster_scoring import assert_same

    _, env = lab
    address = env["ACTIVESEG_LAB_CLUSTER"]
    with Client(address, timeout=30) as dask:
        pids = dask.run(os.getpid)
        shards = dask_shards(address)
        killed: list[int] = []

        def kill_after_the_first_shard(job, parts, hooks):
            for done, (index, scores) in enumerate(shards(job, parts, hooks)):
                if done == 0:  # a worker running a shard now, its process killed
                    busy = next((w for w, keys in dask.processing().items() if keys), None)
                    if busy in pids:
                        killed.append(pids[busy])
                        os.kill(pids[busy], signal.SIGKILL)
                yield index, scores

        cut = query("mc_variance", kill_after_the_first_shard, "killed")
        assert killed, "no shard was running after the first one finished"
        assert_same(query("mc_variance", local_shards, "one"), cut)
        deadline = time.monotonic() + 60  # the nanny starts another worker process
        while len(dask.scheduler_info(n_workers=-1)["workers"]) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert killed[0] not in dask.run(os.getpid).values()
