"""A Prefect server the project starts off loopback needs an auth string (issue 23): refused without
`PREFECT_SERVER_API_AUTH_STRING`; with it, a real server on 0.0.0.0 lets in only clients that send the
string (`PREFECT_API_AUTH_STRING`), which is in no file the project writes and cannot come from params."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from activeseg.core.config import ConfigError, load_config
from activeseg.orchestration import server

AUTH = "lab-admin:Auth-Scan-7f3Kq2Lx9Vb1Nz8W"
REFUSED = (r"refusing to start the Prefect server on 0\.0\.0\.0: that is not a loopback address, so anyone who "
           r"reaches this machine could read and run the campaign's flows\. Set PREFECT_SERVER_API_AUTH_STRING "
           r"in the environment")


@pytest.fixture
def no_auth(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("PREFECT_API_URL", server.HOST_ENV, server.AUTH_ENV, server.CLIENT_AUTH_ENV):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.1.1", "localhost", "LocalHost", "::1", "[::1]"])
def test_loopback_hosts_need_no_auth_string(host: str, no_auth: pytest.MonkeyPatch):
    assert server.is_loopback(host)
    server.check_auth(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "10.0.0.5", "lab-gpu-01", ""])
def test_other_hosts_are_not_loopback(host: str):
    assert not server.is_loopback(host)


def test_a_server_off_loopback_without_an_auth_string_is_refused(tmp_path: Path, no_auth: pytest.MonkeyPatch):
    with pytest.raises(server.ServerAuthError, match=REFUSED) as caught:
        server.start(tmp_path, host="0.0.0.0")
    assert "PREFECT_API_AUTH_STRING" in str(caught.value) and "params.yaml" in str(caught.value)
    assert isinstance(caught.value, server.ServerError)  # the CLI's exit status 2 with the message
    no_auth.setenv(server.HOST_ENV, "0.0.0.0")  # Prefect's own setting: the same rule
    with pytest.raises(server.ServerAuthError, match=REFUSED):
        server.start(tmp_path)
    no_auth.setenv(server.AUTH_ENV, "  ")  # blank is no auth string
    with pytest.raises(server.ServerAuthError, match=REFUSED):
        server.start(tmp_path)
    assert not (tmp_path / ".prefect").exists()  # refused before anything is started or written


def test_a_server_with_auth_needs_the_same_string_for_its_clients(tmp_path: Path, no_auth: pytest.MonkeyPatch):
    no_auth.setenv(server.AUTH_ENV, AUTH)
    for client in (None, "someone:else"):
        if client:
            no_auth.setenv(server.CLIENT_AUTH_ENV, client)
        with pytest.raises(server.ServerAuthError, match="PREFECT_API_AUTH_STRING .* in this environment") as caught:
            server.start(tmp_path, host="0.0.0.0")
        assert AUTH not in str(caught.value) and "someone:else" not in str(caught.value)
    assert not (tmp_path / ".prefect").exists()


def test_the_auth_string_cannot_come_from_params():
    keys = [k for k in load_config(None).flat() if re.search(r"auth|token|password|secret|credential|access", k)]
    assert keys == ["oracle.labelstudio_token_env"]  # the name of an environment variable, not a token
    for setting in (f"server.auth_string={AUTH}", f"prefect.api_auth_string={AUTH}",
                    f"orchestration.server_api_auth_string={AUTH}", f"query.options.random.auth_string={AUTH}"):
        with pytest.raises(ConfigError, match="unknown key"):
            load_config(None, [setting])
    with pytest.raises(ConfigError):
        load_config(None, [f"oracle.labelstudio_token_env={AUTH}"])  # not a variable name


def test_a_restart_keeps_the_host_and_passes_the_auth_strings_on(tmp_path: Path, no_auth: pytest.MonkeyPatch):
    """`restart` (a worker's, of a server that died) starts it again on the recorded host, with the
    caller's auth strings but not its PREFECT_API_URL (which would make it an external server)."""
    home = tmp_path / ".prefect"
    home.mkdir()
    port = server._free_port()  # nothing listens there: the server "died"
    (home / "server.port").write_text(f"{port}\n")
    (home / "server.host").write_text("0.0.0.0\n")
    url = f"http://127.0.0.1:{port}/api"
    assert server.status(tmp_path) is None
    for name, value in ((server.AUTH_ENV, AUTH), (server.CLIENT_AUTH_ENV, AUTH), ("PREFECT_API_URL", url)):
        no_auth.setenv(name, value)
    calls = []
    no_auth.setattr(server.subprocess, "run", lambda command, **kw: calls.append((command, kw)) or
                    server.subprocess.CompletedProcess(command, 0, "", ""))
    assert server.restart(tmp_path, url)
    [(command, kw)] = calls
    assert f"port={port}, host='0.0.0.0'" in command[-1] and AUTH not in command[-1]
    assert kw["env"][server.AUTH_ENV] == kw["env"][server.CLIENT_AUTH_ENV] == AUTH
    assert "PREFECT_API_URL" not in kw["env"]


def _listening_on_all_interfaces(port: int) -> bool:
    """Whether a socket listens on 0.0.0.0:`port` (Linux's /proc/net/tcp; True where there is none)."""
    table = Path("/proc/net/tcp")
    if not table.exists():
        return True
    rows = [line.split() for line in table.read_text().splitlines()[1:]]
    return any(row[1] == f"00000000:{port:04X}" and row[3] == "0A" for row in rows)


@pytest.fixture
def auth_server(tmp_path: Path, no_auth: pytest.MonkeyPatch) -> Iterator[server.Server]:
    no_auth.setenv(server.AUTH_ENV, AUTH)
    no_auth.setenv(server.CLIENT_AUTH_ENV, AUTH)
    try:
        yield server.start(tmp_path, host="0.0.0.0", port=server._free_port("0.0.0.0"))
    finally:
        server.stop(tmp_path)


def test_a_server_on_all_interfaces_lets_in_only_clients_with_the_string(tmp_path: Path, auth_server: server.Server):
    srv = auth_server
    port = int(srv.url.rsplit(":", 1)[1].split("/")[0])
    assert srv.started and srv.host == "0.0.0.0" and srv.url == f"http://127.0.0.1:{port}/api"
    assert _listening_on_all_interfaces(port)
    assert server.status(tmp_path) == server.Server(srv.url, srv.pid, False, log=srv.log, host="0.0.0.0")

    with httpx.Client(base_url=srv.url, timeout=10) as client:
        assert client.get("/health").status_code == 200  # Prefect leaves its health probe open
        assert client.post("/flows/filter", json={}).status_code == 401
        assert client.get("/admin/version").status_code == 401
        assert client.post("/flows/filter", json={}, auth=("lab-admin", "wrong")).status_code == 401
        user, password = AUTH.split(":", 1)
        assert client.post("/flows/filter", json={}, auth=(user, password)).status_code == 200
        assert client.get("/admin/version", auth=(user, password)).status_code == 200

    # the string is in no file the project wrote (pid, port, host, log, database)
    written = [p for p in (tmp_path / ".prefect").rglob("*") if p.is_file()]
    assert {"server.pid", "server.port", "server.host", "server.log", "prefect.db"} <= {p.name for p in written}
    password = AUTH.split(":", 1)[1].encode()
    assert [p.name for p in written if password in p.read_bytes()] == []
    assert (tmp_path / ".prefect" / "server.host").read_text() == "0.0.0.0\n"
