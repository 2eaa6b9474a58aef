"""Bad input beyond the bad-batch kinds of test_workspace.py (issue 13, fault matrix): a decompression
bomb in a label batch, palette and 16-bit masks, odd object names uploaded straight to the bucket, and
params.yaml edited mid-campaign to change the dataset or its split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from activeseg.loop.oracle import ground_truth
from activeseg.workspace import BatchRejected, Workspace, WorkspaceError
from activeseg.workspace.exchange.layout import round_prefix
from tests.conftest import bomb_png
from tests.workspace.s3 import s3_bucket, s3_endpoint, s3_server  # noqa: F401  (fixtures)
from tests.people import enrol
from tests.workspace.test_workspace import (SETTINGS, label_round, requested, round_one, write_good_batch,  # noqa: F401
                                            ws)


def test_a_decompression_bomb_in_a_batch_is_quarantined_without_decoding(ws: Workspace, tmp_path: Path) -> None:
    folder = write_good_batch(ws, tmp_path / "batch")
    first = sorted(folder.iterdir())[0]
    first.write_bytes(bomb_png(4096, 4096))  # 16.8 million pixels in about 17 KB, for a 32 x 32 region
    assert first.stat().st_size < 20_000
    with pytest.raises(BatchRejected) as rejected:
        ws.submit(1, folder, "mallory")
    assert rejected.value.reasons == [
        f"{first.name}: not decoded: its PNG header declares 4096 x 4096 pixels (height x width), more than the "
        "1024 of the largest mask it may be (a decompression bomb?)",
        f"{first.name}: size 4096 x 4096 (height x width), the region's in-image part is 32 x 32"]
    prefix = rejected.value.quarantine.removeprefix(ws.store.url + "/")
    report = json.loads(ws.store.get_bytes(prefix + "report.json"))
    assert report["reasons"] == rejected.value.reasons and report["not_kept"] == {}
    assert ws.store.get_bytes(report["files"][first.name]) == first.read_bytes()  # kept as it came
    assert ws.store.list(round_prefix("labels", 1)) == [] and ws.record(1).staged is None
    label_round(ws)
    assert ws.round_status(1)["labels_accepted"] and ws.round_status(1)["rejected_batches"] == 1


def test_palette_and_16_bit_masks_are_taken_in_by_their_values(ws: Workspace, tmp_path: Path) -> None:
    folder = tmp_path / "batch"
    folder.mkdir()
    regions = requested(ws)
    truth = {r.id: ground_truth(ws.dataset, r) for r in regions}
    for i, region in enumerate(regions):
        mask = truth[region.id]
        if i % 2 == 0:  # palette: index = class id, whatever the colours (here class 1 is drawn red)
            img = Image.fromarray(mask.astype(np.uint8), mode="P")
            img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
        else:  # 16 bits deep, binary as {0, 255}
            img = Image.fromarray((mask * 255).astype(np.uint16))
        img.save(folder / f"{region.id}.png")
    modes = {Image.open(p).mode for p in folder.iterdir()}
    assert modes == {"P", "I;16"} and any(truth[r.id].any() for r in regions)
    ws.submit(1, folder, "alice")
    ws.approve(1, "pi")
    state = ws.label_state()
    for region in regions:
        ys, xs = region.clipped(*state.shapes[region.stem])
        assert np.array_equal(state.labels[region.stem][ys, xs], truth[region.id]), region.id


def test_a_16_bit_mask_with_values_outside_the_classes_is_refused(ws: Workspace, tmp_path: Path) -> None:
    folder = write_good_batch(ws, tmp_path / "batch")
    first = sorted(folder.iterdir())[0]
    Image.fromarray(np.full((32, 32), 65535, np.uint16)).save(first)
    with pytest.raises(BatchRejected) as rejected:
        ws.submit(1, folder, "alice")
    assert rejected.value.reasons == [f"{first.name}: 1024 pixels outside the classes (0..1 or {{0, 255}})"]


@pytest.mark.parametrize("edits, changed", [
    ({"split": {"train": 0.5, "val": 0.2, "test": 0.3}},
     "data.split.test: 0.2 at init, now 0.3; data.split.train: 0.6 at init, now 0.5"),
    ({"seed": 7}, "data.seed: 0 at init, now 7"),
    ({"dataset": "/elsewhere"}, "data.dataset: 'synthetic' at init, now '/elsewhere'"),
])
def test_params_edited_to_change_the_dataset_or_split_are_refused(ws: Workspace, edits: dict, changed: str) -> None:
    params = ws.root / "params.yaml"
    original = params.read_text()
    data = yaml.safe_load(original)
    data["train"]["lr"] = 0.5 * data["train"]["lr"]  # any other key may change between rounds
    params.write_text(yaml.safe_dump(data))
    assert Workspace.open(ws.root).validate()["success"]
    data["data"].update(edits)
    params.write_text(yaml.safe_dump(data))
    edited = Workspace.open(ws.root)  # opening (status, audit, ...) still works
    with pytest.raises(WorkspaceError) as refused:
        edited.validate()
    assert str(refused.value).startswith(f"{params}: {changed}. The dataset and its split are frozen")
    params.write_text(original)
    assert Workspace.open(ws.root).validate()["success"]


def test_a_round_does_not_train_after_the_split_was_edited(ws: Workspace) -> None:
    label_round(ws)
    ws.evaluate(1)
    params = ws.root / "params.yaml"
    params.write_text(params.read_text().replace("train: 0.6, val: 0.2", "train: 0.7, val: 0.1"))
    with pytest.raises(WorkspaceError, match=r"params.yaml: data.split.train: 0.6 at init, now 0.7; "
                                             r"data.split.val: 0.2 at init, now 0.1\."):
        Workspace.open(ws.root).train(2)
    assert ws.record(2).trained is None and ws.ledger.events(type="round_started", round=2) == []


def test_odd_object_names_uploaded_to_the_bucket_are_quarantined_with_reasons(tmp_path: Path, s3_endpoint: str,
                                                                               s3_bucket: str) -> None:
    import boto3

    ws = Workspace.init(tmp_path / "ws", "synthetic", remote=f"s3://{s3_bucket}/campaign", endpoint=s3_endpoint,
                        overrides=SETTINGS)
    enrol(ws.root)
    ws.train(1)
    ws.query(1)
    good = write_good_batch(ws, tmp_path / "batch")
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    labels = f"campaign/{round_prefix('labels', 1)}"
    odd = {"my mask.png": b"space", "maské.png": b"unicode", "../up.png": b"dotdot", "a/../b.png": b"inner",
           "./dot.png": b"dot"}
    for name, body in odd.items():
        client.put_object(Bucket=s3_bucket, Key=labels + name, Body=body)
    for path in good.iterdir():
        client.put_object(Bucket=s3_bucket, Key=labels + path.name, Body=path.read_bytes())
    with pytest.raises(BatchRejected) as rejected:
        ws.ingest(1, "eve")
    reasons = rejected.value.reasons
    for name in odd:
        assert any(r.startswith(f"{name}: not a requested region id") for r in reasons), (name, reasons)
    for name in ("my mask.png", "maské.png"):
        assert any(r.startswith(f"{name}: space or other character than letters") for r in reasons), reasons
    for name in ("../up.png", "a/../b.png", "./dot.png"):
        assert any(r.startswith(f"{name}: '.' or '..' path segment") for r in reasons), reasons
    prefix = rejected.value.quarantine.removeprefix(ws.store.url + "/")
    report = json.loads(ws.store.get_bytes(prefix + "report.json"))
    assert report["reasons"] == reasons and "not_removed" not in report
    # what the S3 client can read is kept (under plain names); what it cannot is named with the reason
    assert ws.store.get_bytes(report["files"]["my mask.png"]) == b"space"
    assert ws.store.get_bytes(report["files"]["maské.png"]) == b"unicode"
    unreadable = {"../up.png", "a/../b.png", "./dot.png"}
    assert set(report["not_kept"]) == unreadable and all(report["files"][n] is None for n in unreadable)
    assert all("the object store client cannot read this name" in report["not_kept"][n] for n in unreadable)
    for path in good.iterdir():
        assert ws.store.get_bytes(report["files"][path.name]) == path.read_bytes()
    # nothing is left under labels/round-001/ (the bulk delete removes even the names the SDK cannot read)
    assert client.list_objects_v2(Bucket=s3_bucket, Prefix=labels).get("KeyCount") == 0
    event = ws.ledger.events(type="batch_rejected", round=1)[-1]
    assert event.data["quarantine"] == prefix and event.data["reasons"] == reasons
    label_round(ws)
    assert ws.round_status(1)["labels_accepted"]
