"""The services of infra/docker-compose.yml started natively on this machine: `make lab`, `make lab-stop`.

    python infra/lab/stack.py [--dir DIR] start [--free-ports]   # idempotent: starts what is not running
    python infra/lab/stack.py [--dir DIR] status                 # exit 0: all up, 3: none, 1: some
    python infra/lab/stack.py [--dir DIR] env                    # the campaign's environment (export lines)
    python infra/lab/stack.py [--dir DIR] stop [SERVICE ...]     # stops everything (or those), checks no port listens
    python infra/lab/stack.py [--dir DIR] restart SERVICE        # one service (postgres: `pg_ctl restart`)

DIR (default: `$ACTIVESEG_LAB_DIR`, else `.lab/` at the repository root) holds all the stack's state:

    postgres/   the PostgreSQL cluster (initdb), owned by the `postgres` user when run as root
    run/        the cluster's Unix socket (mode 0700)
    prefect/    PREFECT_HOME of the Prefect server
    s3/         the S3 server's working folder (its objects live in its memory: see below)
    dask/       the Dask workers' local directories
    logs/       one log per service        pids/   one pid file per service (+ its start tick)
    ports.json  the ports, chosen at the first start and kept     secrets.json  generated passwords (0600)
    env.sh      `source DIR/env.sh`: what a campaign needs (0600)  started.json  the last start's timings

Every service listens on 127.0.0.1 only, with telemetry off. Compose service -> what runs here:
postgres -> a PostgreSQL cluster of its own (Debian's binaries, `initdb` into DIR/postgres), databases
`prefect` and `mlflow`; minio + minio-init -> moto's S3 server (`python -m moto.server`) and the buckets
`activeseg` and `mlflow`; prefect-server -> `prefect server start` on the `prefect` database (asyncpg);
mlflow -> `mlflow server` with the `mlflow` database (psycopg2) as backend store, artifacts proxied
(`--serve-artifacts`) to s3://mlflow/; scheduler + dask-worker x2 -> `dask scheduler` and two
`dask worker --nthreads 1`. Moto keeps objects in memory: a stop empties the buckets (MinIO, in a lab,
keeps them on disk); the databases persist in DIR/postgres.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from activeseg.orchestration import processes
from activeseg.orchestration.server import TELEMETRY_OFF

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
DEFAULT_PORTS = {"postgres": 5433, "s3": 9000, "prefect": 4200, "mlflow": 5000, "scheduler": 8786, "dashboard": 8787}
"""The compose file's ports, but PostgreSQL's: 5432 is the system cluster's (Debian's `main`)."""
BUCKET, MLFLOW_BUCKET = "activeseg", "mlflow"
"""As minio-init creates them (`BUCKET`, `MLFLOW_BUCKET` of infra/.env.example)."""
ACCESS_KEY = "activeseg"
REGION = "us-east-1"
DASK_WORKERS = 2
PG_USER = "postgres"
"""The system user that runs PostgreSQL when this runs as root (postgres refuses to run as root)."""
SERVICES = ("postgres", "s3", "prefect", "mlflow", "scheduler",
            *(f"dask-worker-{i}" for i in range(1, DASK_WORKERS + 1)))
PORTS_OF = {"postgres": ("postgres",), "s3": ("s3",), "prefect": ("prefect",), "mlflow": ("mlflow",),
            "scheduler": ("scheduler", "dashboard")}
FOREIGN = ("PREFECT_API_", "PREFECT_SERVER_DATABASE_", "PREFECT_SERVER_API_", "PREFECT_HOME", "MLFLOW_TRACKING_",
           "MLFLOW_S3_", "AWS_")
"""Settings of the caller's environment meant for other servers: never passed to the stack's services."""


class LabError(RuntimeError):
    """The stack cannot be started or stopped as asked."""


def default_dir() -> Path:
    return Path(os.environ.get("ACTIVESEG_LAB_DIR") or ROOT / ".lab").resolve()


# ---------------------------------------------------------------------------------------------- helpers


def port_free(port: int) -> bool:
    """Whether nothing listens on HOST:port (binding as the servers do: TIME_WAIT is fine)."""
    with closing(socket.socket()) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def listening(port: int) -> bool:
    with closing(socket.socket()) as sock:
        sock.settimeout(1)
        return sock.connect_ex((HOST, port)) == 0


def free_port(taken: set[int]) -> int:
    while True:
        with closing(socket.socket()) as sock:
            sock.bind((HOST, 0))
            port = sock.getsockname()[1]
        if port not in taken:
            return port


def http_get(url: str, timeout: float = 2.0) -> bytes | None:
    """The body of a 200 answer to GET url, else None."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read() if response.status == 200 else None
    except (urllib.error.URLError, OSError, ValueError):
        return None


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def pg_bindir() -> Path:
    """The directory of PostgreSQL's server binaries: `initdb` on PATH (Debian keeps it in
    /usr/lib/postgresql/N/bin, off PATH; a symlink on PATH is followed), else the newest Debian one."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if versions:
        return versions[-1].parent
    raise LabError("PostgreSQL's initdb was not found: install it (`apt-get install -y postgresql`; `make lab` does)")


@dataclass
class Proc:
    """A service's process as recorded under DIR/pids: its pid and start tick (a reused pid is not it)."""

    pid_file: Path

    def pid(self) -> int | None:
        pid = processes.read_pid(self.pid_file)
        if pid is None:
            return None
        stamp = self.pid_file.with_suffix(".start")
        try:
            recorded = int(stamp.read_text().strip())
        except (FileNotFoundError, ValueError):
            recorded = None
        if recorded is not None and processes.start_time(pid) != recorded:
            self.forget()  # that pid is another process now
            return None
        return pid

    def record(self, pid: int) -> None:
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.write_text(f"{pid}\n")
        self.pid_file.with_suffix(".start").write_text(f"{processes.start_time(pid)}\n")

    def forget(self) -> None:
        self.pid_file.unlink(missing_ok=True)
        self.pid_file.with_suffix(".start").unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------ the lab


class Lab:
    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.logs, self.pids, self.run = self.root / "logs", self.root / "pids", self.root / "run"
        self.pgdata = self.root / "postgres"
        self.pg_as_other = os.geteuid() == 0
        self._bindir: Path | None = None

    # -- state files

    def proc(self, name: str) -> Proc:
        return Proc(self.pids / f"{name}.pid")

    def ports(self) -> dict[str, int]:
        try:
            return json.loads((self.root / "ports.json").read_text())
        except FileNotFoundError:
            return {}

    def choose_ports(self, free: bool) -> dict[str, int]:
        """The ports of this folder: those of its first start, kept (the clients' URLs stay valid); at the
        first start the compose file's ports where free (`free`: any free ports)."""
        ports = self.ports()
        if set(DEFAULT_PORTS) <= set(ports):
            return ports
        chosen: dict[str, int] = {}
        for name, default in DEFAULT_PORTS.items():
            taken = set(chosen.values())
            chosen[name] = default if not free and default not in taken and port_free(default) else free_port(taken)
        (self.root / "ports.json").write_text(json.dumps(chosen, indent=1) + "\n")
        return chosen

    def secrets(self) -> dict[str, str]:
        path = self.root / "secrets.json"
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            pass
        values = {"aws_secret_access_key": secrets.token_hex(16), "prefect_db_password": secrets.token_hex(16),
                  "mlflow_db_password": secrets.token_hex(16)}
        path.touch(mode=0o600)
        path.write_text(json.dumps(values, indent=1) + "\n")
        return values

    # -- addresses

    def urls(self, ports: dict[str, int]) -> dict[str, str]:
        return {
            "s3": f"http://{HOST}:{ports['s3']}",
            "prefect": f"http://{HOST}:{ports['prefect']}/api",
            "mlflow": f"http://{HOST}:{ports['mlflow']}",
            "scheduler": f"tcp://{HOST}:{ports['scheduler']}",
            "dashboard": f"http://{HOST}:{ports['dashboard']}/status",
        }

    def db_url(self, ports: dict[str, int], name: str, driver: str) -> str:
        """The URL of database `name` as its own role, with SQLAlchemy's `driver` named (SQLAlchemy 2.1's
        default for a bare postgresql:// is psycopg 3, not installed: MLflow gets +psycopg2, Prefect +asyncpg)."""
        password = self.secrets()[f"{name}_db_password"]
        return f"postgresql{driver}://{name}:{password}@{HOST}:{ports['postgres']}/{name}"

    def client_env(self, ports: dict[str, int]) -> dict[str, str]:
        """What a campaign's processes need (the compose file's `activeseg-env`, with this stack's addresses)."""
        urls = self.urls(ports)
        return {
            **TELEMETRY_OFF,
            "PREFECT_API_URL": urls["prefect"],
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": self.secrets()["aws_secret_access_key"],
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": urls["s3"],  # boto3, DVC's s3fs, the AWS CLI; activeseg: --endpoint at init
            "MLFLOW_TRACKING_URI": urls["mlflow"],  # the mlflow CLI; activeseg: the params' tracking.uri
            "ACTIVESEG_LAB_S3_ENDPOINT": urls["s3"],
            "ACTIVESEG_LAB_BUCKET": BUCKET,
            "ACTIVESEG_LAB_TRACKING_URI": urls["mlflow"],
            "ACTIVESEG_LAB_CLUSTER": urls["scheduler"],
        }

    def env_text(self, ports: dict[str, int]) -> str:
        env = self.client_env(ports)
        lines = [f"# The lab stack of {self.root} (infra/lab/stack.py): `source {self.root / 'env.sh'}`"]
        lines += [f"export {key}={shlex.quote(value)}" for key, value in env.items()]
        lines += [
            "# a campaign on this stack:",
            "#   activeseg init DIR --dataset DATA --remote s3://$ACTIVESEG_LAB_BUCKET/NAME"
            " --endpoint $ACTIVESEG_LAB_S3_ENDPOINT \\",
            "#     --set tracking.uri=$ACTIVESEG_LAB_TRACKING_URI --set query.cluster=$ACTIVESEG_LAB_CLUSTER",
        ]
        return "\n".join(lines) + "\n"

    def service_env(self, ports: dict[str, int], **extra: str) -> dict[str, str]:
        """The caller's environment without settings meant for other servers, telemetry off, plus `extra`."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN)}
        env.update(TELEMETRY_OFF)
        env.update(extra)
        return env

    # -- health

    def healthy(self, name: str, ports: dict[str, int]) -> bool:
        if name == "postgres":
            return self._pg_ready(ports["postgres"])
        if name == "s3":
            return http_get(f"http://{HOST}:{ports['s3']}/") is not None  # ListBuckets
        if name == "prefect":
            return http_get(f"http://{HOST}:{ports['prefect']}/api/health") is not None
        if name == "mlflow":
            return http_get(f"http://{HOST}:{ports['mlflow']}/health") is not None
        if name == "scheduler":
            return http_get(f"http://{HOST}:{ports['dashboard']}/health") is not None
        return self.proc(name).pid() is not None  # a Dask worker: see dask_workers()

    def dask_workers(self, ports: dict[str, int]) -> int | None:
        body = http_get(f"http://{HOST}:{ports['dashboard']}/json/counts.json")
        return json.loads(body)["workers"] if body else None

    def running(self, name: str, ports: dict[str, int]) -> bool:
        return self.proc(name).pid() is not None and self.healthy(name, ports)

    # -- PostgreSQL

    def bindir(self) -> Path:
        if self._bindir is None:
            self._bindir = pg_bindir()
        return self._bindir

    def as_pg(self, command: list[str]) -> list[str]:
        """`command` as the `postgres` system user when this runs as root, else as is."""
        return ["runuser", "-u", PG_USER, "--", *command] if self.pg_as_other else command

    def _pg_ready(self, port: int) -> bool:
        ready = self.bindir() / "pg_isready"
        return subprocess.run([str(ready), "-q", "-h", HOST, "-p", str(port)], check=False).returncode == 0

    def _pg_prepare(self) -> None:
        """The cluster's folders, owned by the user that runs it; the cluster created once (initdb)."""
        log = self.logs / "postgres.log"
        for folder in (self.pgdata, self.run):
            folder.mkdir(mode=0o700, exist_ok=True)
        log.touch()
        if self.pg_as_other:
            try:
                user = pwd.getpwnam(PG_USER)
            except KeyError:
                raise LabError(f"no system user {PG_USER!r} to run PostgreSQL (Debian's package creates it)") from None
            self.root.chmod(self.root.stat().st_mode | 0o011)  # traversable (not listable) by that user
            for path in (self.pgdata, self.run, log):
                os.chown(path, user.pw_uid, user.pw_gid)
            if subprocess.run(self.as_pg(["test", "-w", str(self.pgdata)]), check=False).returncode != 0:
                raise LabError(f"the {PG_USER!r} user cannot reach {self.pgdata}: make the folders above it "
                               f"traversable (chmod o+x) or choose another --dir")
        if len(str(self.run / ".s.PGSQL.00000")) > 100:
            raise LabError(f"{self.run}: too long a path for PostgreSQL's Unix socket; choose a shorter --dir")
        if not (self.pgdata / "PG_VERSION").exists():
            result = subprocess.run(
                self.as_pg([str(self.bindir() / "initdb"), "-D", str(self.pgdata), "-U", "postgres", "-E", "UTF8",
                            "--auth-local=trust", "--auth-host=scram-sha-256", "--no-instructions"]),
                capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise LabError(f"initdb {self.pgdata} failed:\n{result.stdout}{result.stderr}")

    def start_postgres(self, ports: dict[str, int]) -> None:
        self._pg_prepare()
        options = (f"-c port={ports['postgres']} -c listen_addresses={HOST} -c unix_socket_directories={self.run} "
                   f"-c unix_socket_permissions=0700")
        log = self.logs / "postgres.log"
        result = subprocess.run(
            self.as_pg([str(self.bindir() / "pg_ctl"), "-D", str(self.pgdata), "-l", str(log), "-w", "-t", "60",
                        "-o", options, "start"]),
            capture_output=True, text=True, check=False, env=self.service_env(ports))
        if result.returncode != 0:
            raise LabError(f"PostgreSQL did not start: {result.stdout}{result.stderr}\n{log}:\n{tail(log)}")
        pid = int((self.pgdata / "postmaster.pid").read_text().split()[0])
        self.proc("postgres").record(pid)
        self._pg_databases(ports)

    def _pg_databases(self, ports: dict[str, int]) -> None:
        """The roles and databases `prefect` and `mlflow`, each role owning its database, with the passwords
        of secrets.json (set again at each start)."""
        import psycopg2

        connection = psycopg2.connect(host=str(self.run), port=ports["postgres"], user="postgres", dbname="postgres")
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                for name in ("prefect", "mlflow"):
                    cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
                    if cursor.fetchone() is None:
                        cursor.execute(f'CREATE ROLE "{name}" LOGIN')
                    cursor.execute(f'ALTER ROLE "{name}" PASSWORD %s', (self.secrets()[f"{name}_db_password"],))
                    cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                    if cursor.fetchone() is None:
                        cursor.execute(f'CREATE DATABASE "{name}" OWNER "{name}"')
        finally:
            connection.close()

    def restart_postgres(self, ports: dict[str, int]) -> None:
        """`pg_ctl restart -m fast`: the cluster stops (its clients' connections are cut) and starts again
        with the options of its last start, on the same port."""
        log = self.logs / "postgres.log"
        result = subprocess.run(
            self.as_pg([str(self.bindir() / "pg_ctl"), "-D", str(self.pgdata), "-l", str(log), "-m", "fast", "-w",
                        "-t", "60", "restart"]),
            capture_output=True, text=True, check=False, env=self.service_env(ports))
        if result.returncode != 0:
            raise LabError(f"PostgreSQL did not restart: {result.stdout}{result.stderr}\n{log}:\n{tail(log)}")
        self.proc("postgres").record(int((self.pgdata / "postmaster.pid").read_text().split()[0]))

    def stop_postgres(self) -> bool:
        pid = self.proc("postgres").pid()
        if pid is None and not (self.pgdata / "postmaster.pid").exists():
            return False
        if (self.pgdata / "PG_VERSION").exists():
            subprocess.run(self.as_pg([str(self.bindir() / "pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "-w",
                                       "-t", "30", "stop"]), capture_output=True, check=False)
        if pid is not None and processes.alive(pid):
            processes.stop(pid)
        self.proc("postgres").forget()
        return pid is not None

    # -- the other services

    def command(self, name: str, ports: dict[str, int]) -> tuple[list[str], dict[str, str], Path]:
        """The command, environment and working folder of a service other than PostgreSQL."""
        py, bucket_secret = sys.executable, self.secrets()["aws_secret_access_key"]
        aws = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": bucket_secret, "AWS_DEFAULT_REGION": REGION}
        urls = self.urls(ports)
        if name == "s3":
            folder = self.root / "s3"
            (folder / "tmp").mkdir(parents=True, exist_ok=True)
            return ([py, "-m", "moto.server", "-H", HOST, "-p", str(ports["s3"])],
                    self.service_env(ports, TMPDIR=str(folder / "tmp")), folder)
        if name == "prefect":
            folder = self.root / "prefect"
            return ([py, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(ports["prefect"])],
                    self.service_env(ports, PREFECT_HOME=str(folder),
                                     PREFECT_SERVER_DATABASE_CONNECTION_URL=self.db_url(ports, "prefect", "+asyncpg"),
                                     PREFECT_UI_API_URL=urls["prefect"]),
                    folder)
        if name == "mlflow":
            folder = self.root / "mlflow"
            (folder / "tmp").mkdir(parents=True, exist_ok=True)
            return ([py, "-m", "mlflow", "server", "--host", HOST, "--port", str(ports["mlflow"]), "--workers", "1",
                     "--backend-store-uri", self.db_url(ports, "mlflow", "+psycopg2"),
                     "--artifacts-destination", f"s3://{MLFLOW_BUCKET}/", "--serve-artifacts"],
                    # no job runner: its 7 huey consumers (GenAI jobs, unused here) take ~1.4 GB
                    self.service_env(ports, **aws, MLFLOW_S3_ENDPOINT_URL=urls["s3"], TMPDIR=str(folder / "tmp"),
                                     MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),
                    folder)
        if name == "scheduler":
            folder = self.root / "dask"
            return ([py, "-m", "dask", "scheduler", "--host", HOST, "--port", str(ports["scheduler"]),
                     "--dashboard-address", f"{HOST}:{ports['dashboard']}"],
                    self.service_env(ports), folder)
        if name.startswith("dask-worker-"):
            folder = self.root / "dask" / name
            # the compose file's activeseg-env: each shard is a Prefect task run reporting to the same server
            env = self.service_env(ports, **aws, PREFECT_API_URL=urls["prefect"], AWS_ENDPOINT_URL=urls["s3"],
                                   PREFECT_HOME=str(self.root / "dask" / "prefect"))
            return ([py, "-m", "dask", "worker", urls["scheduler"], "--nworkers", "1", "--nthreads", "1",
                     "--host", HOST, "--dashboard-address", f"{HOST}:0", "--name", f"lab-{name}",
                     "--local-directory", str(folder)],
                    env, folder)
        raise ValueError(name)

    def spawn(self, name: str, ports: dict[str, int]) -> int:
        command, env, cwd = self.command(name, ports)
        cwd.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}.log"
        process = processes.spawn(command, pid_file=self.pids / f"{name}.pid", log_file=log, env=env, cwd=cwd)
        self.proc(name).record(process.pid)
        return process.pid

    def stop_service(self, name: str) -> bool:
        if name == "postgres":
            return self.stop_postgres()
        proc = self.proc(name)
        pid = proc.pid()
        if pid is None:
            proc.forget()
            return False
        processes.stop(pid, timeout=20)
        proc.forget()
        return True

    def wait(self, names: list[str], ports: dict[str, int], timeout: float, started: float,
             timings: dict[str, float]) -> None:
        """Wait until each service of `names` answers; a service that exits or does not answer in time
        raises LabError with the end of its log."""
        pending = list(names)
        deadline = time.monotonic() + timeout
        while pending:
            for name in list(pending):
                if self.healthy(name, ports):
                    if not name.startswith("dask-worker-"):  # a worker counts once registered: "dask-workers"
                        timings[name] = round(time.monotonic() - started, 1)
                    pending.remove(name)
                elif self.proc(name).pid() is None:
                    raise LabError(f"{name} exited while starting; {self.logs / f'{name}.log'}:\n"
                                   f"{tail(self.logs / f'{name}.log')}")
            if pending and time.monotonic() > deadline:
                name = pending[0]
                raise LabError(f"{name} did not answer within {timeout:.0f} s; {self.logs / f'{name}.log'}:\n"
                               f"{tail(self.logs / f'{name}.log')}")
            if pending:
                time.sleep(0.25)

    def ensure_buckets(self, ports: dict[str, int]) -> None:
        import boto3
        from botocore.exceptions import ClientError

        s3 = boto3.client("s3", endpoint_url=self.urls(ports)["s3"], aws_access_key_id=ACCESS_KEY,
                          aws_secret_access_key=self.secrets()["aws_secret_access_key"], region_name=REGION)
        for bucket in (BUCKET, MLFLOW_BUCKET):
            try:
                s3.head_bucket(Bucket=bucket)
            except ClientError:
                s3.create_bucket(Bucket=bucket)

    # -- start, stop, status

    def start(self, free_ports: bool = False, timeout: float = 180.0) -> dict:
        """Start every service that does not answer (one that runs but does not answer is restarted first).
        Returns {"already": bool, "seconds": total, "timings": {service: seconds after the start}}."""
        self.root.mkdir(parents=True, exist_ok=True)
        for folder in (self.logs, self.pids):
            folder.mkdir(exist_ok=True)
        with FileLock(self.root / "lab.lock"):
            for module in ("asyncpg", "psycopg2"):
                try:
                    __import__(module)
                except ImportError:
                    raise LabError(f"{module} is not installed in {sys.prefix} (`make venv` installs the pinned "
                                   f"requirements)") from None
            ports = self.choose_ports(free_ports)
            self.secrets()
            down = [name for name in SERVICES if not self.running(name, ports)]
            if not down and self.dask_workers(ports) == DASK_WORKERS:
                return {"already": True, "seconds": 0.0, "timings": {}}
            started, timings = time.monotonic(), {}
            for name in down:  # alive but not answering: a hung process of an earlier start
                self.stop_service(name)
            try:
                self._start(down, ports, timeout, started, timings)
            except BaseException:
                for name in reversed(down):  # what this call started: none is left half up
                    self.stop_service(name)
                raise
            seconds = round(time.monotonic() - started, 1)
            env_file = self.root / "env.sh"
            env_file.touch(mode=0o600)
            env_file.write_text(self.env_text(ports))
            record = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": seconds, "timings": timings}
            (self.root / "started.json").write_text(json.dumps(record, indent=1) + "\n")
            return {"already": False, **record}

    def _start(self, down: list[str], ports: dict[str, int], timeout: float, started: float,
               timings: dict[str, float]) -> None:
        """Start the services `down`: PostgreSQL, then S3 and the scheduler, then the rest at once."""
        for name in down:
            for key in PORTS_OF.get(name, ()):
                if not port_free(ports[key]):
                    raise LabError(f"port {ports[key]} of {name} is taken by another process (`ss -ltnp`): "
                                   f"stop it, or remove {self.root / 'ports.json'} to choose new ports")
        if "postgres" in down:
            self.start_postgres(ports)
            timings["postgres"] = round(time.monotonic() - started, 1)
        first = [name for name in ("s3", "scheduler") if name in down]
        for name in first:
            self.spawn(name, ports)
        self.wait(first, ports, timeout, started, timings)
        if "s3" in down:
            self.ensure_buckets(ports)
        second = [name for name in SERVICES[2:] if name in down and name not in first]
        for name in second:
            self.spawn(name, ports)
        self.wait(second, ports, timeout, started, timings)
        deadline = time.monotonic() + timeout
        while self.dask_workers(ports) != DASK_WORKERS:
            if time.monotonic() > deadline:
                raise LabError(f"the Dask scheduler does not see {DASK_WORKERS} workers; {self.logs}")
            time.sleep(0.25)
        timings["dask-workers"] = round(time.monotonic() - started, 1)

    def stop(self, names: list[str] | None = None) -> list[str]:
        """Stop every service (dependents first), or only those of `names`; raise LabError if a port of
        what was stopped still listens. `start` starts the stopped ones again."""
        if not self.root.exists():
            return []
        unknown = sorted(set(names or ()) - set(SERVICES))
        if unknown:
            raise LabError(f"no service {', '.join(unknown)} (the services: {', '.join(SERVICES)})")
        with FileLock(self.root / "lab.lock"):
            stopped = [name for name in reversed(SERVICES) if (not names or name in names) and self.stop_service(name)]
            ports = self.ports()
            if names:
                ports = {key: port for key, port in ports.items()
                         if any(key in PORTS_OF.get(name, ()) for name in names)}
            deadline = time.monotonic() + 10
            while (busy := [p for p in ports.values() if listening(p)]) and time.monotonic() < deadline:
                time.sleep(0.2)
            if busy:
                raise LabError(f"still listening after the stop: ports {busy} (`ss -ltnp`)")
            return stopped

    def restart(self, name: str, timeout: float = 180.0) -> float:
        """Restart one service: PostgreSQL with `pg_ctl restart`, another by stopping it and starting it
        again on its port; returns the seconds it took."""
        if name not in SERVICES:
            raise LabError(f"no service {name} (the services: {', '.join(SERVICES)})")
        ports = self.ports()
        if not ports:
            raise LabError(f"no lab stack in {self.root}: `make lab` first")
        began = time.monotonic()
        if name == "postgres":
            with FileLock(self.root / "lab.lock"):
                self.restart_postgres(ports)
        else:
            self.stop([name])
            self.start(timeout=timeout)
        return round(time.monotonic() - began, 1)

    def status(self) -> dict[str, dict]:
        ports = self.ports()
        if not ports:
            return {name: {"pid": None, "up": False} for name in SERVICES}
        return {name: {"pid": self.proc(name).pid(), "up": self.running(name, ports)} for name in SERVICES}

    def summary(self, ports: dict[str, int]) -> str:
        urls, pg_user = self.urls(ports), PG_USER if self.pg_as_other else pwd.getpwuid(os.geteuid()).pw_name
        pid = {name: self.proc(name).pid() for name in SERVICES}
        workers = ", ".join(str(pid[n]) for n in SERVICES if n.startswith("dask-worker-"))
        rows = [
            ("postgres", f"{HOST}:{ports['postgres']}", f"pid {pid['postgres']}, user {pg_user}, data {self.pgdata}, "
                                                         f"databases prefect, mlflow"),
            ("s3 (moto)", urls["s3"], f"pid {pid['s3']}, buckets {BUCKET}, {MLFLOW_BUCKET} (in memory)"),
            ("prefect", urls["prefect"], f"pid {pid['prefect']}, UI {urls['prefect'][:-4]}, database prefect"),
            ("mlflow", urls["mlflow"], f"pid {pid['mlflow']}, database mlflow, artifacts s3://{MLFLOW_BUCKET}/"),
            ("dask", urls["scheduler"], f"pid {pid['scheduler']}, dashboard {urls['dashboard']}, "
                                        f"{DASK_WORKERS} workers (pids {workers})"),
        ]
        return "\n".join(f"  {name:<10} {url:<28} {rest}" for name, url, rest in rows)


# -------------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=None,
                        help="the stack's folder (default: $ACTIVESEG_LAB_DIR, else .lab/ at the repository root)")
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("start", help="start what is not running, print the URLs and the environment")
    start.add_argument("--free-ports", action="store_true",
                       help="at the first start of this folder, any free ports instead of the compose file's")
    start.add_argument("--timeout", type=float, default=180.0, help="seconds each service may take to answer")
    stop = commands.add_parser("stop", help="stop everything (or the SERVICEs named); fail if a port still listens")
    stop.add_argument("services", nargs="*", metavar="SERVICE", help=f"one of {', '.join(SERVICES)}")
    restart = commands.add_parser("restart", help="restart one service (postgres: pg_ctl restart -m fast)")
    restart.add_argument("service", choices=SERVICES)
    restart.add_argument("--timeout", type=float, default=180.0, help="seconds the service may take to answer")
    commands.add_parser("status", help="each service's pid and whether it answers (exit 0: all, 3: none, 1: some)")
    commands.add_parser("env", help="print the export lines of DIR/env.sh")
    args = parser.parse_args(argv)
    os.environ.update(TELEMETRY_OFF)
    lab = Lab(args.dir or default_dir())
    try:
        if args.command == "start":
            result = lab.start(free_ports=args.free_ports, timeout=args.timeout)
            ports = lab.ports()
            if result["already"]:
                print(f"lab stack already running in {lab.root}")
            else:
                print(f"lab stack started in {lab.root} in {result['seconds']} s "
                      f"(answering after: {', '.join(f'{k} {v} s' for k, v in result['timings'].items())})")
            print(lab.summary(ports))
            print(f"logs: {lab.logs}    stop: make lab-stop (python infra/lab/stack.py --dir {lab.root} stop)")
            print(f"\n# source {lab.root / 'env.sh'}")
            print(lab.env_text(ports), end="")
        elif args.command == "stop":
            stopped = lab.stop(args.services or None)
            done = f"stopped {', '.join(stopped)}" if stopped else "nothing was running"
            print(f"lab stack in {lab.root}: {done}")
        elif args.command == "restart":
            seconds = lab.restart(args.service, timeout=args.timeout)
            print(f"lab stack in {lab.root}: restarted {args.service} in {seconds} s")
        elif args.command == "status":
            states = lab.status()
            for name, state in states.items():
                print(f"  {name:<14} {'up' if state['up'] else 'down':<5} pid {state['pid']}")
            up = sum(state["up"] for state in states.values())
            return 0 if up == len(states) else 3 if up == 0 else 1
        elif args.command == "env":
            ports = lab.ports()
            if not ports:
                raise LabError(f"no lab stack in {lab.root}: `make lab` first")
            print(lab.env_text(ports), end="")
    except LabError as error:
        print(f"lab stack ({lab.root}): {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
