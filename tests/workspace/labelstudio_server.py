"""A real Label Studio server for the live-loop tests: ``label-studio==1.23.2`` in its own virtual environment
(``make labelstudio-venv``: it pins Django and pytz versions the project's environment cannot share), started
on 127.0.0.1 and a free port with a temporary data directory (SQLite), a preset user and API token (its
documented ``LABEL_STUDIO_USERNAME``, ``LABEL_STUDIO_PASSWORD``, ``LABEL_STUDIO_USER_TOKEN``), sign-up closed,
analytics, Sentry and the version check off; stopped with its whole process group after."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-labelstudio"
EXECUTABLE = VENV / "bin" / "label-studio"
START_SECONDS = 300


@dataclass(frozen=True)
class Server:
    url: str
    token: str
    email: str
    log: Path


def ensure_venv() -> Path:
    """``make labelstudio-venv`` when the executable is missing (minutes: it installs Label Studio)."""
    if not EXECUTABLE.is_file():
        done = subprocess.run(["make", "labelstudio-venv"], cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            pytest.fail(f"make labelstudio-venv failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return EXECUTABLE


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def environment(data_dir: Path, email: str, password: str, token: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("LABEL_STUDIO_", "DJANGO_"))}
    env.update({
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "LABEL_STUDIO_USERNAME": email,
        "LABEL_STUDIO_PASSWORD": password,
        "LABEL_STUDIO_USER_TOKEN": token,
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",  # the preset token is a legacy token
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
        "COLLECT_ANALYTICS": "false",
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
        "LATEST_VERSION_CHECK": "false",
        "DO_NOT_TRACK": "true",
        "PYTHONUNBUFFERED": "1",
    })
    return env


@pytest.fixture(scope="module")
def labelstudio_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    executable = ensure_venv()
    folder = tmp_path_factory.mktemp("labelstudio")
    port, email, password, token = free_port(), "annotator@example.org", secrets.token_hex(12), secrets.token_hex(20)
    url, log = f"http://127.0.0.1:{port}", folder / "server.log"
    env = environment(folder / "data", email, password, token)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(executable), "start", "--no-browser", "--host", url, "--internal-host", "127.0.0.1",
             "--port", str(port), "--data-dir", str(folder / "data")],
            cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + START_SECONDS
        while not _answers(url):
            if process.poll() is not None:
                pytest.fail(f"label-studio exited with {process.returncode}:\n{log.read_text()[-4000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"label-studio did not answer within {START_SECONDS} s:\n{log.read_text()[-4000:]}")
            time.sleep(1)
        yield Server(url, token, email, log)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
