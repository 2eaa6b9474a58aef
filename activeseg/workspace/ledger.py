"""The audit ledger: an append-only, hash-chained event log in SQLite, exported as JSON Lines.

Every event has a sequence number, a UTC time, an actor, a round, a type, a ``once_key`` (see
:meth:`Ledger.append`), its data, the hash of the previous event (64 zeros for the first) and its own
hash: SHA-256 of the canonical JSON (sorted keys, no spaces, UTF-8) of all the other fields. Editing,
inserting or deleting any event breaks the chain from there on, which :meth:`Ledger.verify` finds.
The export ends with a head record (the count and the last hash), so that a deleted line or a cut
tail of the file is found from the file alone (:meth:`Export.check`).
SQLite triggers refuse UPDATE and DELETE, so only a deliberate edit of the file can change history.

Event types (``data`` fields):

- ``dataset_registered``: images, slides (whole-slide images, when any), classes, source, content_sha256,
  dvc (md5 of data/)
- ``split_frozen``: split ({train, val, test: stems}), split_sha256
- ``round_started``: strategy, params_sha256
- ``queried``: regions (ids), scores, costs, strategy, options, budget, checkpoint_sha256, mlflow_run_id
- ``request_published``: regions, store, manifest, manifest_sha256
- ``labels_received``: annotator, batch_sha256, files, source (a batch arrived, before validation)
- ``labels_submitted``: annotator, batch_sha256, files, source, replaces (it passed validation: staged)
- ``labels_approved``: approver, comment, batch_sha256, annotator, regions, flow_run_id (None by hand)
- ``batch_rejected``: annotator, batch_sha256, reasons, quarantine, by
- ``batch_unstaged``: annotator, batch_sha256, by, reason, quarantine (a staged batch left staging without a
  decision on it: replaced by another batch, or its staged bytes changed)
- ``approval_refused``: approver, batch_sha256 (the batch the approval named), reason, flow_run_id,
  quarantine (where the batch went when its bytes had changed, else None)
- ``labels_committed``: annotator, regions, files ({path: sha256}), dvc ({path: md5}), commit, batch_sha256
- ``pseudo_labeled``: regions, model (checkpoint sha256), mlflow_run_id
- ``round_evaluated``: metrics, split, checkpoint_sha256
- ``labels_revoked``: by, reason, regions, batch_sha256, annotator (of the revoked batch), revoked_pixels
  (known pixels lost), returned_to (the round whose open request got the regions back, else None), returned
- ``labelstudio_published``: url, project, tasks, imported (``oracle.kind: labelstudio``: the round's tasks are
  in the Label Studio project; never the token)
- ``access_changed``: by, change (in words), person, access_sha256 (the digest of the access file it produced;
  :mod:`.access`); round 0 at ``init``, else the round in progress
- ``decision_refused``: by, action (the event type refused), reason, and what the action named (a submit,
  reject, revoke or access change refused for the person's role or signature; :mod:`.identity`)

A person's decision (``labels_submitted``, ``labels_approved``, ``batch_rejected`` by a reviewer,
``labels_revoked``, ``access_changed``) may carry their SSH signature in ``data["signature"]``
(:mod:`.signing`): it covers the event's actor, round, type, time, prev and data, so the signer fixes the
time and the previous hash, and :meth:`Ledger.append` takes them (``time``, ``prev``) and refuses the
event when another one was recorded after ``prev`` (:class:`StaleHead`).
"""

from __future__ import annotations

import dataclasses
import json
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from activeseg.core.util import canonical_json, sha256_text, utc_now

GENESIS = "0" * 64
EVENT_TYPES = (
    "dataset_registered",
    "split_frozen",
    "round_started",
    "queried",
    "request_published",
    "labels_received",
    "labels_submitted",
    "batch_rejected",
    "labels_committed",
    "pseudo_labeled",
    "round_evaluated",
    "round_skipped",  # orchestration: trigger, flow_run_id, reason, active_flow_run_id
    "labels_approved",
    "labels_revoked",
    "labelstudio_published",
    "batch_unstaged",
    "approval_refused",
    "access_changed",
    "decision_refused",
)
REGION_ID = re.compile(r"^(?P<stem>.+)_y\d+_x\d+_\d+x\d+$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    actor TEXT NOT NULL,
    round INTEGER NOT NULL,
    type TEXT NOT NULL,
    once_key TEXT,
    data TEXT NOT NULL,
    prev TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS events_once ON events (type, round, once_key) WHERE once_key IS NOT NULL;
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
"""


class LedgerError(RuntimeError):
    """The ledger is broken or cannot be written; the message names the event."""


class StaleHead(LedgerError):
    """An event made for a place in the chain (its ``prev``, as a signature covers it) that another event
    took first."""


def parse_time(text: str) -> datetime:
    """An ISO date or date-time; naive values are taken as UTC."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise LedgerError(f"{text!r}: expected a date such as 2025-01-31 or 2025-01-31T12:00:00Z") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def region_stem(region_id: str) -> str | None:
    """The image stem of a region id ``<stem>_y<y0>_x<x0>_<h>x<w>`` (see :class:`Region`)."""
    match = REGION_ID.match(region_id)
    return match["stem"] if match else None


@dataclass(frozen=True)
class Event:
    seq: int
    time: str
    actor: str
    round: int
    type: str
    once_key: str | None
    data: dict[str, Any]
    prev: str
    hash: str

    def body(self) -> dict[str, Any]:
        """Everything the hash covers."""
        return {"seq": self.seq, "time": self.time, "actor": self.actor, "round": self.round, "type": self.type,
                "once_key": self.once_key, "data": self.data, "prev": self.prev}

    def expected_hash(self) -> str:
        return sha256_text(canonical_json(self.body()))

    def to_dict(self) -> dict[str, Any]:
        return {**self.body(), "hash": self.hash}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "Event":
        return Event(d["seq"], d["time"], d["actor"], d["round"], d["type"], d.get("once_key"), d["data"], d["prev"],
                     d["hash"])

    def mentions(self, sample: str) -> bool:
        """True when the event names the region id ``sample``, or a region or split entry of image ``sample``."""
        regions = self.data.get("regions") or []
        if sample in regions or any(region_stem(r) == sample for r in regions):
            return True
        split = self.data.get("split")
        return isinstance(split, dict) and any(sample in stems for stems in split.values())


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    events: int
    message: str
    bad_seq: int | None = None


class Ledger:
    """The SQLite ledger of one workspace."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            yield db
        finally:
            db.close()

    @staticmethod
    def _row(row: tuple) -> Event:
        seq, time, actor, round_, type_, once_key, data, prev, hash_ = row
        return Event(seq, time, actor, round_, type_, once_key, json.loads(data), prev, hash_)

    def head(self) -> str:
        """The hash of the last event (:data:`GENESIS` for an empty ledger): the ``prev`` of the next one."""
        with self._connect() as db:
            last = db.execute("SELECT hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        return last[0] if last else GENESIS

    def append(self, type: str, round: int, actor: str, data: dict[str, Any], once_key: str | None = None, *,
               time: str | None = None, prev: str | None = None) -> Event:
        """Append an event and return it.

        With ``once_key``, the event is recorded at most once per (type, round, once_key): a repeat
        (a retried or resumed step) returns the recorded event unchanged and appends nothing.
        ``time`` and ``prev`` (a signed event: its signature covers both): the event's time, and the hash
        it must follow; :class:`StaleHead` when the ledger's last event is another one by now.
        """
        if type not in EVENT_TYPES:
            raise LedgerError(f"unknown event type {type!r} (valid: {', '.join(EVENT_TYPES)})")
        data = json.loads(canonical_json(data))  # plain JSON types only, as they will be read back
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                if once_key is not None:
                    row = db.execute("SELECT * FROM events WHERE type=? AND round=? AND once_key=?",
                                     (type, round, once_key)).fetchone()
                    if row is not None:
                        db.execute("COMMIT")
                        return self._row(row)
                last = db.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
                seq, head = (last[0] + 1, last[1]) if last else (1, GENESIS)
                if prev is not None and prev != head:
                    raise StaleHead(f"{type}: made to follow event hash {prev[:12]}, but event {seq - 1} "
                                    f"({head[:12]}) was recorded meanwhile")
                prev = head
                event = Event(seq, time or utc_now(), actor, round, type, once_key, data, prev, "")
                event = dataclasses.replace(event, hash=event.expected_hash())
                db.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           (seq, event.time, actor, round, type, once_key, canonical_json(data), prev, event.hash))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return event

    def events(self, type: str | None = None, round: int | None = None, sample: str | None = None,
               annotator: str | None = None, since: str | None = None) -> list[Event]:
        """Events in order, filtered: by type, round, a region id or image stem, an annotator (the
        event's ``annotator`` or its actor) and a start date."""
        with self._connect() as db:
            rows = db.execute("SELECT * FROM events ORDER BY seq").fetchall()
        found = [self._row(r) for r in rows]
        if type is not None:
            found = [e for e in found if e.type == type]
        if round is not None:
            found = [e for e in found if e.round == round]
        if sample is not None:
            found = [e for e in found if e.mentions(sample)]
        if annotator is not None:
            found = [e for e in found if annotator in (e.data.get("annotator"), e.actor)]
        if since is not None:
            start = parse_time(since)
            found = [e for e in found if parse_time(e.time) >= start]
        return found

    def last(self, type: str, round: int | None = None) -> Event | None:
        found = self.events(type=type, round=round)
        return found[-1] if found else None

    def verify(self) -> VerifyResult:
        """Check every hash and every link of the chain; the result names the first bad event."""
        events = self.events()
        prev = GENESIS
        for expected_seq, event in enumerate(events, start=1):
            where = f"event {event.seq} ({event.type}, round {event.round}, {event.time})"
            if event.seq != expected_seq:
                return VerifyResult(False, len(events), f"event {expected_seq} is missing (next is {event.seq})",
                                    expected_seq)
            if event.prev != prev:
                return VerifyResult(False, len(events), f"{where}: previous-event hash does not match event "
                                    f"{event.seq - 1}", event.seq)
            if event.hash != event.expected_hash():
                return VerifyResult(False, len(events), f"{where}: content does not match its hash (edited)", event.seq)
            prev = event.hash
        return VerifyResult(True, len(events), f"{len(events)} events, chain intact")

    def export_jsonl(self, path: str | Path) -> Path:
        """Write every event, one canonical JSON object per line (the copy tracked in git), then the
        head record ``{"head": {"events": N, "hash": <hash of event N>}}``: with each line's seq, prev
        and hash, a reader of the file alone finds a deleted line or a cut tail (:func:`parse_export`)."""
        path = Path(path)
        events = self.events()
        head = {"head": {"events": len(events), "hash": events[-1].hash if events else GENESIS}}
        tmp = path.with_name(path.name + ".part")
        tmp.write_text("".join(canonical_json(e.to_dict()) + "\n" for e in events) + canonical_json(head) + "\n",
                       encoding="utf-8")
        tmp.replace(path)
        return path

    def check_export(self, path: str | Path) -> VerifyResult:
        """Check that a JSON Lines export is whole (:meth:`Export.check`) and an unedited prefix of this
        ledger (an export lags the database until the next commit)."""
        path = Path(path)
        export = read_export(path)
        result = export.check()
        if not result.ok:
            return result
        stored = {e.seq: e for e in self.events()}
        for number, event in enumerate(export.events, start=1):
            if stored.get(event.seq) != event:
                return VerifyResult(False, len(export.events), f"{export.name} line {number} (event {event.seq}, "
                                    f"{event.type}): differs from the ledger database", event.seq)
        return VerifyResult(True, len(export.events), f"{export.name}: {len(export.events)} events match")

    def import_jsonl(self, jsonl: str | Path) -> int:
        """Append the events of an export that this database lacks (those after its last event), as
        they are: a fresh clone has only the JSON Lines in git. :meth:`verify` checks them. Returns
        how many were added."""
        events = read_export(Path(jsonl)).events
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            last = db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
            new = [e for e in events if e.seq > last]
            rows = [(e.seq, e.time, e.actor, e.round, e.type, e.once_key, canonical_json(e.data), e.prev, e.hash)
                    for e in new]
            db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            db.execute("COMMIT")
        return len(new)


@dataclass(frozen=True)
class Export:
    """A JSON Lines export of the ledger: its events and its head record (None when the last line is
    not one); ``name`` names the file in messages."""

    name: str
    events: list[Event]
    head: dict[str, Any] | None

    def check(self) -> VerifyResult:
        """Check the export on its own: lines numbered 1, 2, ... in seq order, each linked to the one
        before and matching its hash, and the head record naming the last one (count and hash)."""
        prev = GENESIS
        for number, event in enumerate(self.events, start=1):
            where = f"{self.name} line {number} (event {event.seq}, {event.type})"
            if event.seq != number:
                return VerifyResult(False, len(self.events), f"{where}: event {number} is missing (deleted line)",
                                    number)
            if event.prev != prev or event.hash != event.expected_hash():
                return VerifyResult(False, len(self.events), f"{where}: content or link does not match its hash "
                                    "(edited)", event.seq)
            prev = event.hash
        if self.head is None:
            return VerifyResult(False, len(self.events), f"{self.name}: no head record on the last line "
                                "(the tail was cut)", len(self.events) + 1)
        if (self.head.get("events"), self.head.get("hash")) != (len(self.events), prev):
            return VerifyResult(False, len(self.events), f"{self.name}: the head record names "
                                f"{self.head.get('events')} events, the file holds {len(self.events)} "
                                "(lines deleted at the end)", len(self.events) + 1)
        return VerifyResult(True, len(self.events), f"{self.name}: {len(self.events)} events, chain and head intact")

    def is_prefix_of(self, other: "Export") -> VerifyResult:
        """Whether this (older) export's events begin ``other``: history kept, nothing rewritten."""
        for number, event in enumerate(self.events, start=1):
            if number > len(other.events) or other.events[number - 1] != event:
                return VerifyResult(False, len(other.events), f"{other.name} lacks or changed event {event.seq} "
                                    f"({event.type}) of {self.name} (history deleted or rewritten)", event.seq)
        return VerifyResult(True, len(other.events), f"{other.name} extends {self.name}")


def parse_export(text: str, name: str) -> Export:
    """The events and head record of an export's text; a line that is not an event (nor, last, the
    head) raises LedgerError naming ``name`` and the line number."""
    lines = text.splitlines()
    events, head = [], None
    for number, line in enumerate(lines, start=1):
        try:
            value = json.loads(line)
            if number == len(lines) and isinstance(value, dict) and set(value) == {"head"}:
                head = value["head"]
            else:
                events.append(Event.from_dict(value))
        except json.JSONDecodeError as exc:
            raise LedgerError(f"{name} line {number}: not JSON ({exc.msg} at column {exc.colno})") from None
        except (KeyError, TypeError, AttributeError):
            raise LedgerError(f"{name} line {number}: not a ledger event (expected seq, time, actor, round, type, "
                              "data, prev, hash)") from None
    return Export(name, events, head)


def read_export(path: Path) -> Export:
    """:func:`parse_export` of the file ``path`` (named by its path in messages)."""
    return parse_export(path.read_text(encoding="utf-8"), str(path))
