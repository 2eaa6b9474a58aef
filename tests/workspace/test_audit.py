"""`audit verify` on a workspace: lines deleted from the ledger export are found from the file, the
database and git history; a line that is not JSON is named by file and line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from activeseg.cli.main import main
from activeseg.core.util import canonical_json
from activeseg.workspace import Workspace
from activeseg.workspace.ledger import LedgerError
from tests.conftest import TINY


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A workspace after init: its export is committed and tagged round-000."""
    return Workspace.init(tmp_path_factory.mktemp("audit") / "ws", "synthetic", overrides=TINY)


@pytest.fixture
def export(ws: Workspace) -> Iterator[Path]:
    """The workspace's ledger.jsonl, restored (with the database) after the test."""
    path, db = ws.root / "ledger.jsonl", ws.root / "ledger.db"
    text, stored = path.read_text(), db.read_bytes()
    yield path
    path.write_text(text)
    db.write_bytes(stored)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def write(path: Path, kept: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in kept))


def forged_head(events: list[str]) -> str:
    """The head record that makes `events` look whole."""
    return canonical_json({"head": {"events": len(events), "hash": json.loads(events[-1])["hash"]}})


def test_an_untouched_workspace_verifies(ws: Workspace, export: Path) -> None:
    n = len(ws.ledger.events())
    assert len(lines(export)) == n + 1 and json.loads(lines(export)[-1])["head"]["events"] == n
    result = ws.verify()
    assert result.ok and result.message == f"{n} events, chain intact; 3 committed label files match"


def test_a_deleted_middle_line_fails(ws: Workspace, export: Path) -> None:
    original = lines(export)
    write(export, original[:1] + original[2:])
    result = ws.verify()
    assert not result.ok and result.bad_seq == 2
    assert result.message == f"{export} line 2 (event 3, split_frozen): event 2 is missing (deleted line)"
    (export.parent / "ledger.db").unlink()  # a fresh clone: the database is rebuilt from the export
    result = Workspace.open(ws.root).verify()
    assert not result.ok and result.message == "event 2 is missing (next is 3)"


def test_a_deleted_last_event_fails_even_with_a_forged_head(ws: Workspace, export: Path) -> None:
    original = lines(export)
    n = len(original) - 1
    write(export, original[:-2] + original[-1:])
    result = ws.verify()
    assert not result.ok and result.bad_seq == n
    assert result.message == (f"{export}: the head record names {n} events, the file holds {n - 1} "
                              "(lines deleted at the end)")
    write(export, original[:-1])
    assert ws.verify().message == f"{export}: no head record on the last line (the tail was cut)"

    write(export, original[:-2] + [forged_head(original[:-2])])  # whole on its own, a prefix of the database
    assert ws.ledger.check_export(export).ok
    result = ws.verify()
    last = ws.ledger.events()[-1]
    assert not result.ok and result.bad_seq == n
    assert result.message == (f"{export} lacks or changed event {n} ({last.type}) of round-000:ledger.jsonl "
                              "(history deleted or rewritten)")
    (export.parent / "ledger.db").unlink()
    assert Workspace.open(ws.root).verify().message == result.message


def test_a_non_json_line_is_named_by_file_and_line(ws: Workspace, export: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    original = lines(export)
    write(export, original[:2] + ["{not json"] + original[3:])
    (export.parent / "ledger.db").unlink()
    message = f"{export} line 3: not JSON (Expecting property name enclosed in double quotes at column 2)"
    with pytest.raises(LedgerError) as caught:
        Workspace.open(ws.root)
    assert str(caught.value) == message
    for command in (["audit"], ["audit", "verify"]):
        assert main([*command, "--workspace", str(ws.root)]) == 2
        assert message in capsys.readouterr().err.replace("\n", "")
