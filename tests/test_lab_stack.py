"""`make lab` (infra/lab/stack.py): the services of infra/docker-compose.yml started natively, each checked
as a campaign uses it, then `make lab-stop` leaves no process and no listening port.

Opt-in (about a minute on 2 cores): `pytest --lab tests/test_lab_stack.py`. The stack runs in a folder of
its own with free ports, so it never meets a user's `.lab/` stack.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from activeseg.orchestration import processes
from activeseg.orchestration.server import TELEMETRY_OFF

ROOT = Path(__file__).resolve().parents[1]
STACK = ROOT / "infra" / "lab" / "stack.py"
SERVICES = ("postgres", "s3", "prefect", "mlflow", "scheduler", "dask-worker-1", "dask-worker-2")


def stack(folder: Path, *args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "AWS_"))}
    return subprocess.run([sys.executable, str(STACK), "--dir", str(folder), *args], env={**env, **TELEMETRY_OFF},
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def lab_dir():
    # Not tmp_path: its parents are 0700, and PostgreSQL runs as the `postgres` user, who must reach the folder.
    folder = Path(tempfile.mkdtemp(prefix="activeseg-lab-", dir="/tmp"))
    yield folder
    stack(folder, "stop", timeout=120)
    shutil.rmtree(folder, ignore_errors=True)


def exported(env_sh: Path) -> dict[str, str]:
    return dict(line[len("export "):].split("=", 1) for line in env_sh.read_text().splitlines()
                if line.startswith("export "))


def listeners() -> dict[int, list[str]]:
    """pid -> the addresses it listens on (TCP), from `ss -ltnpH`."""
    found: dict[int, list[str]] = {}
    for line in subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout.splitlines():
        fields = line.split()
        for part in line.split("pid=")[1:]:
            found.setdefault(int(part.split(",")[0]), []).append(fields[3])
    return found


def get_json(url: str, data: dict | None = None):
    body = json.dumps(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_make_lab_starts_the_compose_services_natively_and_lab_stop_leaves_nothing(lab_dir: Path):
    began = time.monotonic()
    started = stack(lab_dir, "start", "--free-ports")
    assert started.returncode == 0, started.stdout + started.stderr
    record = json.loads((lab_dir / "started.json").read_text())
    print(f"\nlab stack started in {record['seconds']} s: {record['timings']}")
    assert "lab stack started in" in started.stdout and "export PREFECT_API_URL=" in started.stdout

    ports = json.loads((lab_dir / "ports.json").read_text())
    secrets = json.loads((lab_dir / "secrets.json").read_text())
    env = exported(lab_dir / "env.sh")
    assert oct((lab_dir / "env.sh").stat().st_mode & 0o777) == "0o600"
    assert {k: env[k] for k in TELEMETRY_OFF} == TELEMETRY_OFF
    assert env["PREFECT_API_URL"] == f"http://127.0.0.1:{ports['prefect']}/api"
    assert env["ACTIVESEG_LAB_TRACKING_URI"] == env["MLFLOW_TRACKING_URI"] == f"http://127.0.0.1:{ports['mlflow']}"
    assert env["ACTIVESEG_LAB_CLUSTER"] == f"tcp://127.0.0.1:{ports['scheduler']}"
    assert env["AWS_ENDPOINT_URL"] == env["ACTIVESEG_LAB_S3_ENDPOINT"] == f"http://127.0.0.1:{ports['s3']}"
    pids = {name: int((lab_dir / "pids" / f"{name}.pid").read_text()) for name in SERVICES}

    # idempotent: a second start finds everything up and starts nothing
    again = stack(lab_dir, "start")
    assert again.returncode == 0 and "already running" in again.stdout, again.stdout + again.stderr
    assert {name: int((lab_dir / "pids" / f"{name}.pid").read_text()) for name in SERVICES} == pids
    assert stack(lab_dir, "status").returncode == 0

    # every process of the stack: telemetry off, listening on 127.0.0.1 only
    tree = {pid for root in pids.values() for pid in (root, *processes.descendants(root))}
    for pid in pids.values():
        environ = dict(item.split("=", 1) for item in
                       Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0") if "=" in item)
        assert {k: environ.get(k) for k in TELEMETRY_OFF} == TELEMETRY_OFF, pid
    addresses = [address for pid, found in listeners().items() if pid in tree for address in found]
    assert addresses and all(address.startswith("127.0.0.1:") for address in addresses), addresses
    assert {f"127.0.0.1:{port}" for port in ports.values()} <= set(addresses)

    # PostgreSQL: its own cluster in the folder, the databases prefect and mlflow, each reachable by its role
    import asyncpg
    import psycopg2

    assert (lab_dir / "postgres" / "PG_VERSION").exists()
    cmdline = Path(f"/proc/{pids['postgres']}/cmdline").read_bytes().split(b"\0")
    assert [b"-D", str(lab_dir / "postgres").encode()] == cmdline[1:3]

    async def prefect_tables() -> int:
        connection = await asyncpg.connect(host="127.0.0.1", port=ports["postgres"], user="prefect",
                                           password=secrets["prefect_db_password"], database="prefect")
        try:
            return await connection.fetchval(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = 'flow_run'")
        finally:
            await connection.close()

    assert asyncio.run(prefect_tables()) == 1  # the Prefect server migrated its schema into PostgreSQL

    def query(database: str, sql: str, *args) -> list[tuple]:
        connection = psycopg2.connect(host="127.0.0.1", port=ports["postgres"], user=database,
                                      password=secrets[f"{database}_db_password"], dbname=database)
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql, args)
                return cursor.fetchall()
        finally:
            connection.close()

    # Prefect: healthy, and what its API writes lands in the prefect database
    api = env["PREFECT_API_URL"]
    assert get_json(f"{api}/health") is True
    flow = get_json(f"{api}/flows/", {"name": "lab-stack-check"})
    assert query("prefect", "SELECT name FROM flow WHERE id = %s", flow["id"]) == [("lab-stack-check",)]

    # S3 (moto for MinIO): the buckets of minio-init
    import boto3

    s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name=env["AWS_DEFAULT_REGION"])
    assert {b["Name"] for b in s3.list_buckets()["Buckets"]} >= {"activeseg", "mlflow"}

    # MLflow: healthy; a run in the mlflow database, its artifact proxied into the mlflow bucket
    from mlflow.tracking import MlflowClient

    assert urllib.request.urlopen(f"{env['MLFLOW_TRACKING_URI']}/health", timeout=10).status == 200
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    run = client.create_run(client.create_experiment("lab-stack-check"))
    artifact = lab_dir / "note.txt"
    artifact.write_text("logged through the lab's MLflow server\n")
    client.log_artifact(run.info.run_id, str(artifact))
    client.log_metric(run.info.run_id, "dice", 0.5)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    key = f"{run.info.experiment_id}/{run.info.run_id}/artifacts/note.txt"
    assert s3.get_object(Bucket="mlflow", Key=key)["Body"].read() == artifact.read_bytes()
    assert query("mlflow", "SELECT status FROM runs WHERE run_uuid = %s", run.info.run_id) == [("RUNNING",)]

    # Dask: the scheduler of query.cluster with two single-threaded workers that compute
    from distributed import Client

    with Client(env["ACTIVESEG_LAB_CLUSTER"], timeout=30) as dask:
        workers = dask.scheduler_info(n_workers=-1)["workers"]
        assert len(workers) == 2 and {w["nthreads"] for w in workers.values()} == {1}
        assert dask.gather(dask.map(lambda x: x * x, range(8))) == [x * x for x in range(8)]

    # make lab-stop: no process of the stack, no listening port
    stopped = stack(lab_dir, "stop", timeout=120)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert not [pid for pid in tree if processes.alive(pid)]
    assert not [pid for pid in listeners() if pid in tree]
    ss = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True, check=True).stdout.splitlines()
    assert not set(ports.values()) & {int(line.split()[3].rsplit(":", 1)[1]) for line in ss}
    assert not list((lab_dir / "pids").glob("*.pid"))
    assert stack(lab_dir, "status").returncode == 3
    assert "nothing was running" in stack(lab_dir, "stop").stdout
    print(f"test took {time.monotonic() - began:.1f} s")
