"""The local Prefect server of a workspace: start, stop, status (plain Python, no Prefect import).

The embedded default runs `python -m prefect server start` on 127.0.0.1 as a detached process whose
home is `<workspace>/.prefect` (SQLite database `prefect.db`, pid file `server.pid`, port file
`server.port`, log `server.log`, task results in `storage/`). When `PREFECT_API_URL` is set in the
environment, that external server is used instead and none is started or stopped here.
"""

from __future__ import annotations

import os
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

HOST = "127.0.0.1"
PREFECT_DIR = ".prefect"
TELEMETRY_OFF = {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
}
CLIENT_RETRIES = 8
"""Prefect client retries of a request the server does not answer (Prefect's default: 5, about 1 min)."""
PLAIN_HTTP_CA = "plain-http-ca.pem"
"""The CA file of Prefect's clients of a plain-HTTP API, in the Prefect home (see `client_env`)."""


class ServerError(RuntimeError):
    """The Prefect server could not be started or does not answer."""


@dataclass(frozen=True)
class Server:
    """A Prefect server a workspace talks to.

    url: its API URL (`http://127.0.0.1:PORT/api`). pid: the local server's process (None when
    external). external: given by `PREFECT_API_URL`. started: this call started it. log: its log file.
    """

    url: str
    pid: int | None
    external: bool
    started: bool = False
    log: Path | None = None


def prefect_home(workspace: Path) -> Path:
    """The Prefect home of a workspace (server database, pid/port/log files, task results)."""
    return Path(workspace).resolve() / PREFECT_DIR


def client_env(workspace: Path, server: Server) -> dict[str, str]:
    """Environment for any process that talks to `server` for this workspace (CLI, worker, flow runs).

    Task results are persisted by default under `<workspace>/.prefect/storage`, so a resumed or
    retried flow run, wherever it is started from, finds the results of finished tasks. A request to
    a server that stopped answering is retried `CLIENT_RETRIES` times with doubling waits (2, 4, ... s:
    about 8.5 min in all), so a flow run outlives a server restart.

    A client of a plain-HTTP API (the local server) never checks a certificate, yet Prefect builds the
    TLS context of every client it opens from a CA file: certifi's 150 certificates by default, 40 ms
    of CPU each time, for each of the dozens of clients a round opens. Such clients get a file of one
    certificate instead (`PLAIN_HTTP_CA`), unless `PREFECT_API_SSL_CERT_FILE` is set already.
    """
    home = prefect_home(workspace)
    env = {
        **TELEMETRY_OFF,
        "PREFECT_CLIENT_MAX_RETRIES": str(CLIENT_RETRIES),
        "PREFECT_API_URL": server.url,
        "PREFECT_HOME": str(home),
        "PREFECT_LOCAL_STORAGE_PATH": str(home / "storage"),
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
    }
    if server.url.startswith("http://") and "PREFECT_API_SSL_CERT_FILE" not in os.environ:
        env["PREFECT_API_SSL_CERT_FILE"] = str(_plain_http_ca(home))
    return env


def _plain_http_ca(home: Path) -> Path:
    """`home`/PLAIN_HTTP_CA, written once: any valid certificate does (none is ever checked), here the
    first of certifi's bundle."""
    path = home / PLAIN_HTTP_CA
    if not path.exists():
        import certifi

        begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
        bundle = Path(certifi.where()).read_text()
        first = bundle[bundle.index(begin):bundle.index(end) + len(end)] + "\n"
        home.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}")  # written whole, then renamed: processes may race
        partial.write_text(first)
        partial.replace(path)
    return path


def status(workspace: Path) -> Server | None:
    """The server this workspace uses if it answers, else None (a stale pid file is removed)."""
    external = _external_url()
    if external:
        return Server(external, None, True) if healthy(external) else None
    home = prefect_home(workspace)
    pid = processes.read_pid(home / "server.pid")
    port = _read_port(home)
    if pid is None or port is None:
        return None
    url = _url(port)
    return Server(url, pid, False, log=home / "server.log") if healthy(url) else None


def start(workspace: Path, *, port: int | None = None, timeout: float = 90.0) -> Server:
    """The workspace's server, started if it is not running (`started` says whether it was).

    `port`: the port to listen on; by default the last one used if it is free, else any free port.
    Raises ServerError, with the end of the server log, when it does not come up within `timeout` s.
    """
    external = _external_url()
    if external:
        if not healthy(external):
            raise ServerError(
                f"PREFECT_API_URL={external} is set but no Prefect server answers at {external}/health"
            )
        return Server(external, None, True)
    home = prefect_home(workspace)
    home.mkdir(parents=True, exist_ok=True)
    with FileLock(home / "server.lock"):
        running = status(workspace)
        if running is not None:
            return running
        pid = processes.read_pid(home / "server.pid")
        if pid is not None:  # alive but not answering: a hung server from an earlier start
            processes.stop(pid)
        port = port or _reusable_port(home) or _free_port()
        (home / "server.port").write_text(f"{port}\n")
        log = home / "server.log"
        process = processes.spawn(
            [sys.executable, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(port)],
            pid_file=home / "server.pid",
            log_file=log,
            env=_server_env(home),
            cwd=home,
        )
        url = _url(port)
        _wait_healthy(url, process.pid, log, timeout)
        return Server(url, process.pid, False, started=True, log=log)


def restart(workspace: Path, url: str, *, timeout: float = 90.0) -> bool:
    """Start the workspace's local server again at `url` (the same port, so the clients that know it
    reconnect) when it does not answer; False when it answers or is external.

    It is started from a short-lived process, so it is not a descendant of the caller (a worker):
    stopping the worker leaves it running, as when a CLI command started it.
    """
    port = _read_port(prefect_home(workspace))
    if port is None or url != _url(port) or healthy(url):  # not the local server, or it answers
        return False
    root = str(prefect_home(workspace).parent)
    code = f"from activeseg.orchestration import server; server.start({root!r}, port={port}, timeout={timeout})"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_")}  # not an external server
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                            timeout=timeout + 30)
    if result.returncode != 0:
        raise ServerError(f"the local Prefect server did not restart at {url}: {result.stderr.strip()[-2000:]}")
    return True


def stop(workspace: Path, *, timeout: float = 20.0) -> bool:
    """Stop the workspace's local server; False when none was running. An external one is left alone."""
    if _external_url():
        return False
    home = prefect_home(workspace)
    pid = processes.read_pid(home / "server.pid")
    if pid is None:
        return False
    processes.stop(pid, timeout=timeout)
    (home / "server.pid").unlink(missing_ok=True)
    return True


def healthy(url: str) -> bool:
    """Whether a Prefect API at `url` answers its health check."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _external_url() -> str | None:
    return os.environ.get("PREFECT_API_URL") or None


def _url(port: int) -> str:
    return f"http://{HOST}:{port}/api"


def _server_env(home: Path) -> dict[str, str]:
    """The caller's environment with the home, the SQLite database and telemetry set, and any
    database or API settings meant for another server removed."""
    foreign = ("PREFECT_API_", "PREFECT_SERVER_DATABASE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(foreign)}
    env.update(TELEMETRY_OFF)
    env["PREFECT_HOME"] = str(home)
    env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{home / 'prefect.db'}"
    return env


def _wait_healthy(url: str, pid: int, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if healthy(url):
            return
        if not processes.alive(pid):
            raise ServerError(f"the Prefect server exited while starting; {log}:\n{_tail(log)}")
        time.sleep(0.25)
    processes.stop(pid)
    raise ServerError(f"the Prefect server did not answer at {url} within {timeout:.0f} s; {log}:\n{_tail(log)}")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def _read_port(home: Path) -> int | None:
    try:
        return int((home / "server.port").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _reusable_port(home: Path) -> int | None:
    port = _read_port(home)
    if port is None:
        return None
    with closing(socket.socket()) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is fine
        try:
            sock.bind((HOST, port))
        except OSError:
            return None
    return port


def _free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]

