"""The live Label Studio loop's settings and errors that need no server: the URL in params, the token from the
environment only, and an unreachable server named without the token (the loop itself runs against a real
server in tests/workspace/exchange/test_labelstudio_live.py)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest

from activeseg.cli.main import main
from activeseg.core.config import ConfigError, load_config
from activeseg.orchestration.approval import approve
from activeseg.workspace import Workspace
from activeseg.workspace.creation import write_params
from activeseg.workspace.exchange.formats.live import STATE, LabelStudioError, _api, client
from tests.conftest import TINY
from tests.people import enrol

TOKEN = "secret-token-0123456789abcdef"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when the socket is: nothing listens there


def settings(url: str | None, *more: str):
    return SimpleNamespace(cfg=load_config(None, ["oracle.kind=labelstudio", *([f"oracle.labelstudio_url={url}"] * bool(url)),
                                                  *more]))


def test_the_url_is_required_and_must_be_http() -> None:
    with pytest.raises(ConfigError, match="labelstudio_url: required"):
        load_config(None, ["oracle.kind=labelstudio"])
    with pytest.raises(ConfigError, match="http"):
        load_config(None, ["oracle.kind=labelstudio", "oracle.labelstudio_url=ftp://host"])
    with pytest.raises(ConfigError, match="labelstudio_token_env"):
        load_config(None, ["oracle.kind=labelstudio", "oracle.labelstudio_url=http://h", "oracle.labelstudio_token_env=a b"])
    assert load_config(None, []).oracle.labelstudio_url is None  # other oracles need none


def test_the_token_comes_from_the_environment_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    with pytest.raises(LabelStudioError, match="LABEL_STUDIO_API_KEY"):
        client(settings("http://127.0.0.1:1"))
    monkeypatch.setenv("MY_LS_TOKEN", TOKEN)
    assert client(settings("http://127.0.0.1:1", "oracle.labelstudio_token_env=MY_LS_TOKEN")) is not None


def test_an_unreachable_server_is_named_without_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", TOKEN)
    ws = settings(f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(LabelStudioError, match=r"Label Studio at http://127\.0\.0\.1:\d+: listing projects failed") as caught:
        with _api(ws, "listing projects"):
            client(ws).projects.list()
    assert TOKEN not in str(caught.value)


def test_approve_with_nothing_staged_pulls_from_label_studio_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """`activeseg approve` of a round with no staged batch asks Label Studio for the annotations (as `labels
    pull`) instead of answering that nothing is staged; here nothing listens, so it says that (the pull that
    stages and the approval: tests/workspace/exchange/test_labelstudio_live.py)."""
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", TOKEN)
    url = f"http://127.0.0.1:{closed_port()}"
    ws = Workspace.init(tmp_path / "ws", "synthetic", overrides=[*TINY, "oracle.kind=human"])
    enrol(ws.root)
    ws.train(1)
    ws.query(1)  # the round's request, published before Label Studio is configured
    write_params(ws.root / "params.yaml", ws.root / "params.yaml",
                 ["oracle.kind=labelstudio", f"oracle.labelstudio_url={url}"])
    ws = Workspace.open(ws.root)
    with pytest.raises(LabelStudioError, match="round 1: no Label Studio tasks were published"):
        approve(None, ws, 1, "pi")
    (ws.root / STATE).write_text(json.dumps({"url": url, "project": 7, "rounds": {"1": {"tasks": {"r": 70}}}}))
    assert main(["approve", "--round", "1", "--by", "pi", "--workspace", str(ws.root)]) != 0
    said = "".join(capsys.readouterr())
    assert f"Label Studio at {url}: reading the annotations of project 7 failed" in said and TOKEN not in said
    assert ws.record(1).labels_accepted is None and not ws.ledger.events(type="labels_approved")
