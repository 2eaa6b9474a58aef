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


def test_a_query_names_its_controls_and_a_switch_its_branch() -> None:
    data = {"regions": ["a", "b", "c"], "scores": [0.5, 0.25, None], "costs": [1024, 512, 1024],
            "strategy": "coverage_then_uncertainty", "options": {}, "budget": 2600, "checkpoint_sha256": "ab" * 32,
            "mlflow_run_id": None, "controls": ["c"], "details": {"branch": "claspe", "coverage": 0.91}}
    line = ("strategy coverage_then_uncertainty (round by claspe), 3 regions (1 of them controls), "
            "model abababababab, mlflow run -")
    assert summary(event("queried", data)) == line
    assert summary(event("queried", data), "b") == line + "; score 0.25, cost 512 px"
    assert summary(event("queried", data), "c") == line + "; a control region (no score), cost 1024 px"
    plain = {k: v for k, v in data.items() if k not in ("controls", "details")}
    assert summary(event("queried", plain)) == ("strategy coverage_then_uncertainty, 3 regions, model abababababab, "
                                                "mlflow run -")
