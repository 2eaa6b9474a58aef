"""The label exchange: request crops and previews, batch reading, hashing and quarantine."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from activeseg.core.data import Dataset, load_dataset
from activeseg.workspace.exchange import (OUTLINE, BatchEntry, batch_sha256, context_box, mask_png, publish_request,
                                quarantine, read_folder_batch, read_manifest, read_store_batch, to_uint8,
                                upload_batch)
from activeseg.core.partition import Region
from activeseg.workspace.storage import LocalStore
from activeseg.core.synthetic import synthesize


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return load_dataset(synthesize(tmp_path_factory.mktemp("data") / "data", n=3, size=64, seed=0), 2)


def png(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)


@pytest.mark.parametrize("region, box", [
    (Region("s", 16, 16, 48, 48), (0, 0, 64, 64)),  # margin 16 on every side reaches the borders
    (Region("s", 0, 32, 32, 64), (0, 16, 48, 64)),
    (Region("s", 48, 8, 80, 24), (32, 0, 64, 40)),  # mirror-padded box: the margin grows from the in-image part
])
def test_context_box(region: Region, box: tuple[int, int, int, int]) -> None:
    assert context_box(region, 64, 64) == box


def test_publish_request_writes_crops_previews_then_the_manifest(dataset: Dataset, tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    regions = [{**Region("syn-001", 0, 32, 32, 64).to_dict(), "cost": 1024, "score": 0.5},
               {**Region("syn-002", 48, 48, 80, 80).to_dict(), "cost": 256, "score": 0.25}]
    manifest = publish_request(store, 3, regions, dataset, {"strategy": "random"})
    assert read_manifest(store, 3) == manifest
    assert read_manifest(store, 4) is None
    first, second = manifest["regions"]
    assert (manifest["round"], manifest["strategy"]) == (3, "random")
    assert first["id"] == "syn-001_y0000_x0032_32x32" and first["label_size"] == [32, 32]
    assert first["crop_box"] == [0, 16, 48, 64] and first["region_in_crop"] == [0, 16, 32, 48]
    assert first["label"] == "labels/round-003/syn-001_y0000_x0032_32x32.png"
    assert (second["label_size"], second["cost"], second["score"]) == ([16, 16], 256, 0.25)
    crop = png(tmp_path / first["crop"])
    np.testing.assert_array_equal(crop, to_uint8(dataset.image("syn-001")[0:48, 16:64]))
    preview = png(tmp_path / first["preview"])
    y0, x0, y1, x1 = first["region_in_crop"]
    border = np.zeros(crop.shape[:2], bool)
    border[y0:y1, [x0, x1 - 1]] = border[[y0, y1 - 1], x0:x1] = True
    assert (preview[border] == OUTLINE).all()
    np.testing.assert_array_equal(preview[~border], crop[~border])
    assert sorted(p.name for p in (tmp_path / "requests/round-003").iterdir()) == [
        "manifest.json", "syn-001_y0000_x0032_32x32.png", "syn-001_y0000_x0032_32x32.preview.png",
        "syn-002_y0048_x0048_32x32.png", "syn-002_y0048_x0048_32x32.preview.png"]


def test_mask_png_uses_the_dataset_convention() -> None:
    mask = np.array([[0, 1], [1, 0]], np.uint8)
    assert Image.open(io.BytesIO(mask_png(mask, 2))).getpixel((1, 0)) == 255
    assert Image.open(io.BytesIO(mask_png(mask * 2, 3))).getpixel((1, 0)) == 2


def test_read_folder_batch_sees_everything_and_follows_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "batch"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.png").write_bytes(b"a")
    (folder / ".hidden.png").write_bytes(b"h")
    (folder / "sub" / "b.png").write_bytes(b"b")
    (folder / "big.png").write_bytes(b"x" * 11)
    (tmp_path / "secret").write_bytes(b"secret")
    os.symlink(tmp_path / "secret", folder / "link.png")
    entries = read_folder_batch(folder, max_bytes=10)
    assert [(e.name, e.kind, e.data) for e in entries] == [
        (".hidden.png", "file", b"h"), ("a.png", "file", b"a"), ("big.png", "file", None),
        ("link.png", "symlink", None), ("sub/b.png", "file", b"b")]
    with pytest.raises(FileNotFoundError, match="label folder not found"):
        read_folder_batch(tmp_path / "nothing", 10)


def test_batch_hash_depends_on_names_and_bytes_not_order() -> None:
    a, b = BatchEntry("a.png", "file", 1, b"a"), BatchEntry("b.png", "file", 1, b"b")
    assert batch_sha256([a, b]) == batch_sha256([b, a])
    assert batch_sha256([a, b]) != batch_sha256([a, BatchEntry("b.png", "file", 1, b"c")])
    assert batch_sha256([a, b]) != batch_sha256([a, BatchEntry("c.png", "file", 1, b"b")])


def test_quarantine_from_the_store_keeps_files_and_reopens_the_request(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    entries = [BatchEntry("ok.png", "file", 2, b"ok"), BatchEntry("sub/x.png", "file", 1, b"x"),
               BatchEntry("big.png", "file", 5, None)]
    upload_batch(store, 2, entries[:2])
    store.put_bytes("labels/round-002/big.png", b"12345")
    read = read_store_batch(store, 2, max_bytes=4)
    assert read == sorted(entries, key=lambda e: e.name)
    prefix = quarantine(store, 2, read, {"reasons": ["big.png: too big"]}, from_store=True)
    assert prefix.startswith("quarantine/round-002/") and prefix.endswith("Z/")
    assert store.list("labels/") == []
    report = json.loads(store.get_bytes(prefix + "report.json"))
    assert report["reasons"] == ["big.png: too big"] and report["round"] == 2
    assert report["files"] == {"big.png": f"{prefix}files/0000-big.png", "ok.png": f"{prefix}files/0001-ok.png",
                               "sub/x.png": f"{prefix}files/0002-sub_x.png"}
    assert store.get_bytes(f"{prefix}files/0000-big.png") == b"12345"


def test_quarantine_from_a_folder_never_copies_links(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    entries = [BatchEntry("../a.png", "file", 1, b"a"), BatchEntry("link.png", "symlink", 9, None)]
    prefix = quarantine(store, 1, entries, {"reasons": []}, from_store=False)
    report = json.loads(store.get_bytes(prefix + "report.json"))
    assert report["files"] == {"../a.png": f"{prefix}files/0000-_a.png", "link.png": None}
    assert [i.key for i in store.list("quarantine/")] == [f"{prefix}files/0000-_a.png", f"{prefix}report.json"]
