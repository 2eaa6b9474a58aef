"""The local Prefect server of a workspace: start, stop, status (plain Python, no Prefect import).

The embedded default runs `python -m prefect server start` on 127.0.0.1 as a detached process whose
home is `<workspace>/.prefect` (SQLite database `prefect.db`, pid file `server.pid`, port file
`server.port`, host file `server.host`, log `server.log`, task results in `storage/`). When
`PREFECT_API_URL` is set in the environment, that external server is used instead and none is started
or stopped here.

Another address to listen on is given by `start(host=...)` (`activeseg server start --host`) or by
Prefect's own `PREFECT_SERVER_API_HOST` in the environment. A server on anything but loopback is
started only with `PREFECT_SERVER_API_AUTH_STRING` set in the environment (Prefect's HTTP basic auth;
only `GET /api/health` and `/api/ready` stay open); its clients send `PREFECT_API_AUTH_STRING` from
their environment. Neither string is ever read from params.yaml nor written to any file here.
"""

from __future__ import annotations

import ipaddress
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
"""The default address the local server listens on (loopback: only this machine reaches it)."""
HOST_ENV = "PREFECT_SERVER_API_HOST"
"""Prefect's setting of the server's address, honoured as the default of `start(host=...)`."""
AUTH_ENV = "PREFECT_SERVER_API_AUTH_STRING"
"""The server's basic-auth string ('user:password'), from the environment only; required off loopback."""
CLIENT_AUTH_ENV = "PREFECT_API_AUTH_STRING"
"""What Prefect's clients send to a server with basic auth, from their environment only."""
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


class ServerAuthError(ServerError):
    """A server is refused: it would listen beyond loopback without an auth string, or this environment's
    clients would not be let in."""


@dataclass(frozen=True)
class Server:
    """A Prefect server a workspace talks to.

    url: its API URL (`http://127.0.0.1:PORT/api`). pid: the local server's process (None when
    external). external: given by `PREFECT_API_URL`. started: this call started it. log: its log file.
    host: the address the local server listens on (its clients on this machine use `url`).
    """

    url: str
    pid: int | None
    external: bool
    started: bool = False
    log: Path | None = None
    host: str = HOST


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
    host = _read_host(home)
    url = _url(port, host)
    return Server(url, pid, False, log=home / "server.log", host=host) if healthy(url) else None


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback address (127.0.0.0/8, ::1) or `localhost`: only this machine reaches it."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # another name: it may resolve to any interface


def check_auth(host: str) -> None:
    """Raise ServerAuthError unless a server on `host` may be started from this environment: off loopback
    it needs `PREFECT_SERVER_API_AUTH_STRING`; with one (on any host) this environment's clients need
    the same string in `PREFECT_API_AUTH_STRING`. The strings are never part of the message."""
    auth = os.environ.get(AUTH_ENV, "")
    if not auth.strip():
        if is_loopback(host):
            return
        raise ServerAuthError(
            f"refusing to start the Prefect server on {host}: that is not a loopback address, so anyone who "
            f"reaches this machine could read and run the campaign's flows. Set {AUTH_ENV} in the environment "
            f"(e.g. 'user:long-random-password'; the server then requires HTTP basic auth) and give its "
            f"clients the same string in {CLIENT_AUTH_ENV} (environment only, never params.yaml), or start "
            f"it on {HOST}"
        )
    if os.environ.get(CLIENT_AUTH_ENV) != auth:
        state = "is not set" if CLIENT_AUTH_ENV not in os.environ else "differs"
        raise ServerAuthError(
            f"{AUTH_ENV} is set, so the Prefect server requires basic auth, but {CLIENT_AUTH_ENV} {state} in "
            f"this environment: set {CLIENT_AUTH_ENV} to the same string, so that this command, the worker "
            f"and its flow runs (the server's clients) are let in"
        )


def start(workspace: Path, *, port: int | None = None, host: str | None = None, timeout: float = 90.0) -> Server:
    """The workspace's server, started if it is not running (`started` says whether it was).

    `port`: the port to listen on; by default the last one used if it is free, else any free port.
    `host`: the address to listen on; by default `PREFECT_SERVER_API_HOST` from the environment, else
    127.0.0.1. Raises ServerAuthError (`check_auth`), before anything is started or written, for a host
    off loopback without `PREFECT_SERVER_API_AUTH_STRING`; ServerError, with the end of the server log,
    when it does not come up within `timeout` s.
    """
    external = _external_url()
    if external:
        if not healthy(external):
            raise ServerError(
                f"PREFECT_API_URL={external} is set but no Prefect server answers at {external}/health"
            )
        return Server(external, None, True)
    host = (host if host is not None else os.environ.get(HOST_ENV, "")).strip() or HOST
    check_auth(host)
    home = prefect_home(workspace)
    home.mkdir(parents=True, exist_ok=True)
    with FileLock(home / "server.lock"):
        running = status(workspace)
        if running is not None:
            return running
        pid = processes.read_pid(home / "server.pid")
        if pid is not None:  # alive but not answering: a hung server from an earlier start
            processes.stop(pid)
        port = port or _reusable_port(home, host) or _free_port(host)
        (home / "server.port").write_text(f"{port}\n")
        (home / "server.host").write_text(f"{host}\n")
        log = home / "server.log"
        process = processes.spawn(
            [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)],
            pid_file=home / "server.pid",
            log_file=log,
            env=_server_env(home),
            cwd=home,
        )
        url = _url(port, host)
        _wait_healthy(url, process.pid, log, timeout)
        return Server(url, process.pid, False, started=True, log=log, host=host)


def restart(workspace: Path, url: str, *, timeout: float = 90.0) -> bool:
    """Start the workspace's local server again at `url` (the same port, so the clients that know it
    reconnect) when it does not answer; False when it answers or is external.

    It is started from a short-lived process, so it is not a descendant of the caller (a worker):
    stopping the worker leaves it running, as when a CLI command started it. It listens on the same
    host, under the same rule (`check_auth`, with the caller's auth strings).
    """
    home = prefect_home(workspace)
    port, host = _read_port(home), _read_host(home)
    if port is None or url != _url(port, host) or healthy(url):  # not the local server, or it answers
        return False
    root = str(home.parent)
    code = (f"from activeseg.orchestration import server; "
            f"server.start({root!r}, port={port}, host={host!r}, timeout={timeout})")
    env = {k: v for k, v in os.environ.items()  # not an external server; the auth strings pass on
           if not k.startswith("PREFECT_API_") or k == CLIENT_AUTH_ENV}
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


def _url(port: int, host: str = HOST) -> str:
    """The API URL for clients on this machine of a server listening on `host` (a wildcard address is
    reached on loopback)."""
    name = host.strip("[]")
    name = {"0.0.0.0": HOST, "": HOST, "::": "::1"}.get(name, name)
    return f"http://{f'[{name}]' if ':' in name else name}:{port}/api"


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


def _read_host(home: Path) -> str:
    """The host the local server was last started on (`HOST` when not recorded, as before hosts were)."""
    try:
        return (home / "server.host").read_text().strip() or HOST
    except FileNotFoundError:
        return HOST


def _socket(host: str, port: int) -> tuple[socket.socket, tuple]:
    """An unbound TCP socket for `host` and its address (ServerError when the host is not one)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror:
        raise ServerError(f"host {host!r}: not a valid hostname or IP address of this machine") from None
    return socket.socket(family, kind, proto), address


def _reusable_port(home: Path, host: str = HOST) -> int | None:
    port = _read_port(home)
    if port is None:
        return None
    sock, address = _socket(host, port)
    with closing(sock):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is fine
        try:
            sock.bind(address)
        except OSError:
            return None
    return port


def _free_port(host: str = HOST) -> int:
    sock, address = _socket(host, 0)
    with closing(sock):
        try:
            sock.bind(address)
        except OSError as exc:
            raise ServerError(f"cannot listen on {host}: {exc}") from None
        return sock.getsockname()[1]

