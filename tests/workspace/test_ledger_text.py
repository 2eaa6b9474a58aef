"""How ledger events read in `activeseg audit` (and the demo's history): an approval in words like the
other events, never as raw JSON."""

from __future__ import annotations

from typing import Any

from activeseg.workspace.ledger import Event
from activeseg.workspace.ledger_text import summary


def event(kind: str, data: dict[str, Any]) -> Event:
    return Event(seq=7, time="2025-01-31T10:00:00+00:00", actor="pi", round=2, type=kind, once_key=None, data=data,
                 prev="0" * 64, hash="1" * 64)


def test_an_approval_reads_as_a_sentence() -> None:
    data = {"approver": "pi", "comment": "checked", "batch_sha256": "3fa9c1d2e4b5" + "0" * 52, "annotator": "alice",
            "regions": ["r1", "r2"], "flow_run_id": "6b1f0c2e-0000-4000-8000-000000000000"}
    assert summary(event("labels_approved", data)) == (
        "batch 3fa9c1d2e4b5 from alice approved by pi (checked), flow run 6b1f0c2e-0000-4000-8000-000000000000")
    by_hand = {**data, "comment": "", "flow_run_id": None}
    assert summary(event("labels_approved", by_hand)) == "batch 3fa9c1d2e4b5 from alice approved by pi, by hand"


def test_a_skipped_round_reads_as_a_sentence() -> None:
    data = {"trigger": "schedule", "flow_run_id": "f1", "reason": "label budget reached", "active_flow_run_id": None}
    assert summary(event("round_skipped", data)) == "schedule trigger, flow run f1: label budget reached"
