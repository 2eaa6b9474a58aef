"""The workspace's local Prefect server as a real process, and the external-server switch."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from activeseg.orchestration import processes
from activeseg.orchestration import server


@pytest.fixture
def no_external(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)


def test_start_status_stop_restart(tmp_path: Path, no_external: None):
    try:
        first = server.start(tmp_path)
        assert first.started and not first.external
        assert first.url.startswith("http://127.0.0.1:") and first.url.endswith("/api")
        home = tmp_path / ".prefect"
        assert {"server.pid", "server.port", "server.log", "prefect.db"} <= {p.name for p in home.iterdir()}
        assert server.healthy(first.url)

        again = server.start(tmp_path)
        assert (again.started, again.pid, again.url) == (False, first.pid, first.url)
        assert server.status(tmp_path) == again

        assert server.stop(tmp_path)
        assert not processes.alive(first.pid)
        assert server.status(tmp_path) is None and not server.healthy(first.url)
        assert not server.stop(tmp_path)

        restarted = server.start(tmp_path)
        assert restarted.started and restarted.pid != first.pid
        assert restarted.url == first.url  # the last port is reused when it is free

        os.kill(restarted.pid, signal.SIGKILL)  # as a worker finds it: `restart` starts it on its port
        assert server.restart(tmp_path, restarted.url)
        after = server.status(tmp_path)
        assert after.url == restarted.url and after.pid not in (restarted.pid, None)
        assert after.pid not in processes.descendants(os.getpid())  # not a child: it outlives the caller
        assert not server.restart(tmp_path, after.url)  # it answers
        assert not server.restart(tmp_path, "http://127.0.0.1:9/api")  # not this workspace's server
    finally:
        server.stop(tmp_path)


def test_prefect_api_url_selects_an_external_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # discard port: nothing answers

    with pytest.raises(server.ServerError, match=r"PREFECT_API_URL=http://127.0.0.1:9/api is set but no"):
        server.start(tmp_path)
    assert server.status(tmp_path) is None
    assert not server.stop(tmp_path)
    assert not (tmp_path / ".prefect").exists()  # nothing local was started


def test_client_env_points_every_process_at_the_workspace(tmp_path: Path):
    srv = server.Server("http://127.0.0.1:4200/api", None, external=True)
    env = server.client_env(tmp_path, srv)
    home = tmp_path.resolve() / ".prefect"
    assert env["PREFECT_API_URL"] == "http://127.0.0.1:4200/api"
    assert env["PREFECT_HOME"] == str(home)
    assert env["PREFECT_LOCAL_STORAGE_PATH"] == str(home / "storage")
    assert env["PREFECT_RESULTS_PERSIST_BY_DEFAULT"] == "true"
    assert env["PREFECT_CLIENT_MAX_RETRIES"] == "8"  # 2 + 4 + ... + 256 s: a server restart is outlived
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false" and env["DO_NOT_TRACK"] == "true"


def test_a_plain_http_api_gets_a_small_ca_file_and_https_keeps_prefects(tmp_path: Path, monkeypatch):
    import ssl

    monkeypatch.delenv("PREFECT_API_SSL_CERT_FILE", raising=False)
    env = server.client_env(tmp_path, server.Server("http://127.0.0.1:4200/api", 1, external=False))
    ca = Path(env["PREFECT_API_SSL_CERT_FILE"])
    assert ca == tmp_path.resolve() / ".prefect" / server.PLAIN_HTTP_CA
    assert ca.read_text().count("BEGIN CERTIFICATE") == 1
    ssl.create_default_context(cafile=str(ca))  # a CA file TLS accepts
    https = server.client_env(tmp_path, server.Server("https://prefect.lab.example/api", None, external=True))
    assert "PREFECT_API_SSL_CERT_FILE" not in https  # a real TLS server is checked against Prefect's own CAs
    monkeypatch.setenv("PREFECT_API_SSL_CERT_FILE", "/etc/lab-ca.pem")
    assert "PREFECT_API_SSL_CERT_FILE" not in server.client_env(tmp_path, server.Server("http://h/api", None, True))
