"""Typed round records: a record.json written before the types existed reads and writes back byte for
byte; a malformed one is named; the step preamble runs a step once per round."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from activeseg.core.partition import Region
from activeseg.workspace.base import round_step
from activeseg.workspace.records import Evaluated, Records, RoundRecord

SHA = "4fff4a103fe3bc053d9ac6601baf58298803c31cbc190d8dfceeafa39bb06405"
REGION = {"id": "syn-006_y0016_x0032_32x32", "stem": "syn-006", "box": [16, 32, 48, 64]}
# round 1 as the dict-based workspace wrote it (one region kept), with ints and nulls where it had them
OLD_RECORD = {
    "round": 1,
    "trained": {"round": 1, "checkpoint": "model/model.pt", "checkpoint_sha256": SHA, "mlflow_run_id": None,
                "val_dice": 0.0, "best_epoch": 0, "revealed_pixels": 3072, "labeled_pixel_fraction": 0.125},
    "queried": {"round": 1, "created": "2026-11-30T10:09:39.230036Z", "strategy": "mc_variance", "options": {},
                "budget": 2048, "spent": 512, "checkpoint_sha256": SHA, "mlflow_run_id": None,
                "regions": [{**REGION, "cost": 512, "score": 0.0001906934630824253}],
                "pseudo": {"file": "pseudo/round-001.npz", "regions": [REGION], "origin": "round-001",
                           "replace": True},
                "request": "/tmp/ws-remote/requests/round-001/", "manifest_sha256": "99" * 32},
    "labels_accepted": {"round": 1, "annotator": "simulated-oracle", "batch_sha256": "76" * 32, "files": 1,
                        "commit": "b69a2566f7031f273819aab1dd2b345d25e045cd", "revealed_pixels": 512,
                        "known_pixel_fraction": 0.20833333333333334, "time": "2026-11-30T10:09:43.030788Z"},
    "evaluated": {"round": 1, "metrics": {"dice": 0.0, "voe": 1.0, "msd": None, "msd_skipped": 2, "hd95": None,
                                          "hd95_skipped": 2},
                  "split": "test", "checkpoint_sha256": SHA, "mlflow_run_id": None, "labeled_pixel_fraction": 0.125},
}


def write_record(root: Path, record: dict) -> Path:
    path = Records(root).path(record["round"])
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def test_an_existing_record_reads_typed_and_saves_back_unchanged(tmp_path: Path) -> None:
    path = write_record(tmp_path, OLD_RECORD)
    before = path.read_text()
    records = Records(tmp_path)
    record = records.read(1)
    assert record.trained.val_dice == 0.0 and record.queried.pseudo.replace is True
    assert record.requested()[0].region() == Region("syn-006", 16, 32, 48, 64)
    assert record.evaluated.metrics["msd_skipped"] == 2 and record.labels_accepted.annotator == "simulated-oracle"
    records.save(record)
    assert path.read_text() == before


def test_which_labels_are_uncorrected_predictions_is_kept(tmp_path: Path) -> None:
    accepted = {**OLD_RECORD["labels_accepted"], "reviewed_unchanged": [REGION["id"]]}
    path = write_record(tmp_path, {**OLD_RECORD, "labels_accepted": accepted})
    before = path.read_text()
    records = Records(tmp_path)
    record = records.read(1)
    assert record.labels_accepted.reviewed_unchanged == [REGION["id"]]
    records.save(record)
    assert path.read_text() == before


def test_absent_entries_are_none_and_left_out_of_the_file(tmp_path: Path) -> None:
    records = Records(tmp_path)
    assert records.read(3) == RoundRecord(round=3) and records.numbers() == []
    partial = {key: OLD_RECORD[key] for key in ("round", "trained")}
    path = write_record(tmp_path, partial)
    record = records.read(1)
    assert record.queried is None and record.labels_accepted is None and records.accepted() == []
    records.save(record)
    assert json.loads(path.read_text()) == partial and records.numbers() == [1]


def test_a_malformed_record_is_named_with_the_bad_key(tmp_path: Path) -> None:
    path = write_record(tmp_path, {**OLD_RECORD, "trained": {**OLD_RECORD["trained"], "val_dyce": 0.5}})
    with pytest.raises(ValueError, match="val_dyce") as error:
        Records(tmp_path).read(1)
    assert str(path) in str(error.value)


class Core:
    """The part of a workspace :func:`round_step` uses: round numbers and records."""

    def __init__(self, root: Path):
        self.records, self.runs = Records(root), 0

    def resolve(self, round_number: int | None) -> int:
        return 2 if round_number is None else round_number

    def record(self, round_number: int) -> RoundRecord:
        return self.records.read(round_number)


@round_step("evaluated")
def fake_evaluate(ws: Core, record: RoundRecord) -> Evaluated:
    ws.runs += 1
    return Evaluated(round=record.round, metrics={"dice": 0.5}, split="test", checkpoint_sha256=SHA,
                     mlflow_run_id=None, labeled_pixel_fraction=0.25)


def test_a_round_step_runs_once_then_returns_its_recorded_entry(tmp_path: Path) -> None:
    ws = Core(tmp_path)
    first = fake_evaluate(ws)  # default: the round ws.resolve gives
    assert first.round == 2 and ws.record(2).evaluated == first and ws.runs == 1
    assert fake_evaluate(ws, 2) == first and ws.runs == 1
    assert fake_evaluate(ws, 3).round == 3 and ws.runs == 2
