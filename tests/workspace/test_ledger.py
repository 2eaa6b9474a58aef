"""The audit ledger: hash chain, append-only, idempotent events, verification, export and queries."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from pathlib import Path

import pytest

from activeseg.workspace.ledger import GENESIS, Ledger, LedgerError, region_stem
from activeseg.workspace.ledger_text import to_csv
from activeseg.core.util import canonical_json


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "ledger.db")


def tamper(path: Path, sql: str) -> None:
    """What someone editing the file would do: drop the guards, then change history."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("DROP TRIGGER events_no_update")
    db.execute("DROP TRIGGER events_no_delete")
    db.execute(sql)
    db.close()


def test_canonical_json_is_sorted_compact_utf8() -> None:
    assert canonical_json({"b": [1, 2.5], "a": "é", "c": None}) == '{"a":"é","b":[1,2.5],"c":null}'


def test_hash_chain_by_hand(ledger: Ledger) -> None:
    first = ledger.append("round_started", 1, "alice", {"strategy": "random"})
    second = ledger.append("queried", 1, "alice", {"regions": ["s_y0000_x0000_4x4"]}, once_key="abc")
    body = ('{"actor":"alice","data":{"strategy":"random"},"once_key":null,"prev":"' + GENESIS
            + '","round":1,"seq":1,"time":"' + first.time + '","type":"round_started"}')
    assert first.prev == GENESIS
    assert first.hash == hashlib.sha256(body.encode()).hexdigest()
    assert second.seq == 2 and second.prev == first.hash
    assert first.time.endswith("Z") and "T" in first.time
    assert ledger.events() == [first, second]
    assert ledger.verify().ok


def test_the_database_refuses_updates_and_deletes(ledger: Ledger) -> None:
    ledger.append("round_started", 1, "alice", {"strategy": "random"})
    db = sqlite3.connect(ledger.path)
    for sql in ("UPDATE events SET actor='mallory'", "DELETE FROM events"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute(sql)
    db.close()
    assert ledger.events()[0].actor == "alice"


def test_once_key_records_an_event_once(ledger: Ledger) -> None:
    a = ledger.append("labels_received", 2, "bob", {"batch_sha256": "h1"}, once_key="h1")
    again = ledger.append("labels_received", 2, "bob", {"batch_sha256": "changed"}, once_key="h1")
    other_round = ledger.append("labels_received", 3, "bob", {"batch_sha256": "h1"}, once_key="h1")
    plain = [ledger.append("batch_rejected", 2, "v", {"reasons": []}) for _ in range(2)]
    assert again == a
    assert [e.seq for e in ledger.events()] == [1, 2, 3, 4]
    assert other_round.seq == 2 and [p.seq for p in plain] == [3, 4]


def test_unknown_event_type_is_refused(ledger: Ledger) -> None:
    with pytest.raises(LedgerError, match="unknown event type 'labels_eaten'"):
        ledger.append("labels_eaten", 1, "x", {})


@pytest.mark.parametrize("sql, message", [
    ("UPDATE events SET data='{\"strategy\":\"entropy\"}' WHERE seq=2", "event 2 .* content does not match"),
    ("UPDATE events SET actor='mallory' WHERE seq=2", "event 2 .* content does not match"),
    ("DELETE FROM events WHERE seq=2", "event 2 is missing"),
])
def test_verify_names_the_first_edited_event(ledger: Ledger, sql: str, message: str) -> None:
    for n in range(1, 4):
        ledger.append("round_started", n, "alice", {"strategy": "random"})
    tamper(ledger.path, sql)
    result = ledger.verify()
    assert not result.ok and result.bad_seq == 2
    assert re.search(message, result.message)


def test_rehashing_an_edited_event_still_breaks_the_link(ledger: Ledger) -> None:
    for n in range(1, 4):
        ledger.append("round_started", n, "alice", {"strategy": "random"})
    event = ledger.events()[1]
    forged = {**event.body(), "actor": "mallory"}
    new_hash = hashlib.sha256(canonical_json(forged).encode()).hexdigest()
    tamper(ledger.path, f"UPDATE events SET actor='mallory', hash='{new_hash}' WHERE seq=2")
    result = ledger.verify()
    assert not result.ok and result.bad_seq == 3 and "previous-event hash" in result.message


def test_export_import_and_checking_an_export(tmp_path: Path, ledger: Ledger) -> None:
    ledger.append("split_frozen", 0, "init", {"split": {"train": ["a"], "val": ["b"], "test": ["c"]}})
    ledger.append("round_started", 1, "alice", {"strategy": "random"})
    export = ledger.export_jsonl(tmp_path / "ledger.jsonl")
    lines = export.read_text().splitlines()
    assert [json.loads(line)["seq"] for line in lines[:-1]] == [1, 2]
    assert json.loads(lines[-1]) == {"head": {"events": 2, "hash": ledger.events()[-1].hash}}
    assert ledger.check_export(export).ok
    copy = Ledger(tmp_path / "copy.db")
    assert copy.import_jsonl(export) == 2 and copy.import_jsonl(export) == 0
    assert copy.events() == ledger.events() and copy.verify().ok
    ledger.append("round_started", 2, "alice", {"strategy": "random"})
    assert ledger.check_export(export).ok  # an older export is a prefix of the ledger
    export.write_text(lines[0] + "\n" + lines[1].replace("alice", "mallory") + "\n" + lines[2] + "\n")
    result = ledger.check_export(export)
    assert not result.ok and result.bad_seq == 2
    assert result.message == f"{export} line 2 (event 2, round_started): content or link does not match its hash (edited)"


def three_events(ledger: Ledger, path: Path) -> list[str]:
    for n in range(1, 4):
        ledger.append("round_started", n, "alice", {"strategy": "random"})
    return ledger.export_jsonl(path).read_text().splitlines()


@pytest.mark.parametrize("kept, bad_seq, message", [
    ([0, 2, 3], 2, "line 2 (event 3, round_started): event 2 is missing (deleted line)"),
    ([0, 1, 3], 3, ": the head record names 3 events, the file holds 2 (lines deleted at the end)"),
    ([0, 1, 2], 4, ": no head record on the last line (the tail was cut)"),
])
def test_an_export_missing_a_line_fails_on_its_own(tmp_path: Path, ledger: Ledger, kept: list[int], bad_seq: int,
                                                   message: str) -> None:
    """A deleted middle line, a deleted last event, a deleted head: found from the file alone, even
    where the database agrees with every line left (a shorter export is a valid older one)."""
    path = tmp_path / "ledger.jsonl"
    lines = three_events(ledger, path)
    path.write_text("".join(lines[i] + "\n" for i in kept))
    result = ledger.check_export(path)
    assert not result.ok and result.bad_seq == bad_seq
    assert result.message == f"{path}{' ' if message.startswith('line') else ''}{message}"


def test_a_non_json_export_line_is_named_by_file_and_line(tmp_path: Path, ledger: Ledger) -> None:
    path = tmp_path / "ledger.jsonl"
    lines = three_events(ledger, path)
    path.write_text(lines[0] + "\n" + "oops\n" + "".join(line + "\n" for line in lines[2:]))
    with pytest.raises(LedgerError) as caught:
        ledger.check_export(path)
    assert str(caught.value) == f"{path} line 2: not JSON (Expecting value at column 1)"
    path.write_text(lines[0] + "\n" + '{"seq": 2}\n')
    with pytest.raises(LedgerError, match=r"ledger.jsonl line 2: not a ledger event \(expected seq, time"):
        Ledger(tmp_path / "copy.db").import_jsonl(path)


def test_queries(ledger: Ledger) -> None:
    ledger.append("split_frozen", 0, "init", {"split": {"train": ["img-1", "img_2"], "test": ["img-3"]}})
    ledger.append("queried", 1, "alice", {"regions": ["img_2_y0000_x0032_32x32", "img-1_y0000_x0000_32x32"]})
    ledger.append("labels_committed", 1, "bob", {"annotator": "bob", "regions": ["img_2_y0000_x0032_32x32"]})
    ledger.append("round_evaluated", 1, "alice", {"metrics": {}, "split": "test"})
    assert [e.seq for e in ledger.events(sample="img_2_y0000_x0032_32x32")] == [2, 3]
    assert [e.seq for e in ledger.events(sample="img_2")] == [1, 2, 3]
    assert [e.seq for e in ledger.events(sample="img-3")] == [1]
    assert [e.seq for e in ledger.events(round=1, annotator="bob")] == [3]
    assert [e.seq for e in ledger.events(annotator="alice")] == [2, 4]
    assert len(ledger.events(since="2000-01-01")) == 4 and ledger.events(since="2999-01-01T00:00:00Z") == []
    with pytest.raises(LedgerError, match="expected a date"):
        ledger.events(since="yesterday")
    rows = to_csv(ledger.events(round=1)).splitlines()
    assert rows[0] == "seq,time,round,type,actor,data,hash" and len(rows) == 4


def test_region_stem() -> None:
    assert region_stem("syn-003_y0032_x0000_32x32") == "syn-003"
    assert region_stem("a_b_y0001_x0002_3x4") == "a_b"
    assert region_stem("syn-003") is None
