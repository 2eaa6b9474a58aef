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
from activeseg.workspace.exchange.batches import (BatchEntry, batch_sha256, quarantine, read_folder_batch,
                                                  read_store_batch)
from activeseg.workspace.exchange.images import OUTLINE, mask_png, to_uint8
from activeseg.workspace.exchange.requests import context_box, publish_request, read_manifest
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
    scale = first["preview_scale"]
    assert scale == 8 and preview.shape == (48 * 8, 48 * 8, 3)  # a 48 px crop enlarged to 384 px
    y0, x0, y1, x1 = (v * scale for v in first["region_in_crop"])
    inner = np.zeros(preview.shape[:2], bool)
    inner[y0 + 4:y1 - 4, x0 + 4:x1 - 4] = True
    border = np.zeros(preview.shape[:2], bool)
    border[y0:y1, x0:x1] = True
    border &= ~inner  # the outline: 4 px (half a crop pixel) on the region's edge pixels
    assert (preview[border] == OUTLINE).all()
    enlarged = np.repeat(np.repeat(crop, scale, 0), scale, 1)
    np.testing.assert_array_equal(preview[~border], enlarged[~border])
    assert sorted(p.name for p in (tmp_path / "requests/round-003").iterdir()) == [
        "INSTRUCTIONS.md", "manifest.json", "manifest.schema.json", "syn-001_y0000_x0032_32x32.png",
        "syn-001_y0000_x0032_32x32.preview.png", "syn-002_y0048_x0048_32x32.png",
        "syn-002_y0048_x0048_32x32.preview.png"]


def test_request_documents_its_manifest_classes_and_mask_sizes(dataset: Dataset, tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    regions = [{**Region("syn-001", 0, 32, 32, 64).to_dict(), "cost": 1024, "score": 0.5},
               {**Region("syn-002", 40, 40, 80, 80).to_dict(), "cost": 576, "score": None}]
    manifest = publish_request(store, 2, regions, dataset, {"strategy": "random", "classes": 2})
    schema = json.loads((tmp_path / "requests/round-002/manifest.schema.json").read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert "[y0, x0, y1, x1]" in schema["properties"]["regions"]["items"]["properties"]["box"]["description"]
    assert manifest["class_names"] == ["background", "foreground"]
    assert manifest["instructions"] == "requests/round-002/INSTRUCTIONS.md"
    try:
        import jsonschema
    except ImportError:  # check the required keys by hand
        assert set(schema["required"]) <= set(manifest)
        item_required = schema["properties"]["regions"]["items"]["required"]
        assert all(set(item_required) <= set(r) for r in manifest["regions"])
    else:
        jsonschema.Draft202012Validator.check_schema(schema)
        jsonschema.Draft202012Validator(schema).validate(manifest)
        broken = {**manifest, "regions": [{**manifest["regions"][0], "box": [0, 0, 32]}]}
        assert not jsonschema.Draft202012Validator(schema).is_valid(broken)
    text = (tmp_path / "requests/round-002/INSTRUCTIONS.md").read_text()
    assert "| 0 | background |" in text and "| 255 (1 is accepted too) | foreground |" in text
    assert "| `syn-001_y0000_x0032_32x32.png` | 32 x 32 |" in text
    assert "| `syn-002_y0040_x0040_40x40.png` | 24 x 24 |" in text  # label_size: the in-image part
    assert "not the whole crop" in text and "activeseg labels submit" in text and "labels/round-002/" in text
    assert "activeseg labels import" in text and "[y0, x0, y1, x1]" in text
    for region in manifest["regions"]:
        with Image.open(tmp_path / region["preview"]) as img:
            assert max(img.size) >= 384


def test_three_class_instructions_list_class_ids(dataset: Dataset, tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    regions = [{**Region("syn-001", 0, 0, 32, 32).to_dict(), "cost": 1024, "score": 0.5}]
    manifest = publish_request(store, 1, regions, dataset, {"classes": 3})
    text = (tmp_path / "requests/round-001/INSTRUCTIONS.md").read_text()
    assert manifest["class_names"] == ["background", "class 1", "class 2"]
    assert "| 1 | class 1 |" in text and "| 2 | class 2 |" in text


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
    for entry in entries[:2]:
        store.put_bytes(f"labels/round-002/{entry.name}", entry.data)
    store.put_bytes("labels/round-002/big.png", b"12345")
    read = read_store_batch(store, 2, max_bytes=4)
    assert read == sorted(entries, key=lambda e: e.name)
    prefix = quarantine(store, 2, read, {"reasons": ["big.png: too big"]}, source="labels/round-002/")
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
    prefix = quarantine(store, 1, entries, {"reasons": []}, source=None)
    report = json.loads(store.get_bytes(prefix + "report.json"))
    assert report["files"] == {"../a.png": f"{prefix}files/0000-_a.png", "link.png": None}
    assert [i.key for i in store.list("quarantine/")] == [f"{prefix}files/0000-_a.png", f"{prefix}report.json"]
