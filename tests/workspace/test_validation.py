"""Great Expectations suites: every defect is named with its file, in a sentence; the report keeps the
expectation behind each."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from activeseg.workspace.exchange.batches import BatchEntry
from activeseg.workspace.exchange.images import png_bytes
from activeseg.core.synthetic import synthesize
from activeseg.workspace.validation import ValidationFailed, pixels_outside_classes, validate_dataset, validate_label_batch
from activeseg.workspace.validation.suite import ValidationReport

SPLIT = {"train": ["syn-000", "syn-001", "syn-002", "syn-003"], "val": ["syn-004"], "test": ["syn-005"]}


@pytest.fixture(scope="module")
def clean_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthesize(tmp_path_factory.mktemp("data") / "data", n=6, size=64, seed=0)


@pytest.fixture
def dataset(clean_dataset: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(clean_dataset, tmp_path / "data"))


def save(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path)


def test_a_clean_dataset_passes(dataset: Path) -> None:
    report = validate_dataset(dataset, 2, 32, SPLIT, split_intact=True, queried_stems={"syn-000"})
    assert report.success and report.reasons == []
    assert set(report.result) == {"images", "split"}
    assert all(r["success"] for r in report.result["images"]["results"])
    json.dumps(report.to_dict())  # the GX result is kept as JSON


DEFECTS: dict[str, tuple[Callable[[Path], None], str]] = {
    "no mask": (lambda d: (d / "masks/syn-001.png").unlink(),
                "images/syn-001.png: no mask masks/syn-001.png"),
    "no image": (lambda d: (d / "images/syn-001.png").unlink(),
                 "masks/syn-001.png: no image in images/ for stem syn-001"),
    "unreadable image": (lambda d: (d / "images/syn-001.png").write_bytes(b"not a png"),
                         "images/syn-001.png: unreadable image"),
    "unreadable mask": (lambda d: (d / "masks/syn-001.png").write_bytes(b"not a png"),
                        "images/syn-001.png: unreadable mask masks/syn-001.png (masks are PNG)"),
    "size mismatch": (lambda d: save(d / "masks/syn-001.png", np.zeros((60, 64), np.uint8)),
                      "images/syn-001.png: mask size 60 x 64 (height x width) differs from the image's 64 x 64"),
    "mask values": (lambda d: save(d / "masks/syn-001.png", np.full((64, 64), 7, np.uint8)),
                    "images/syn-001.png: 4096 mask pixels outside the classes 0..1"),
    "mask channels": (lambda d: save(d / "masks/syn-001.png", np.zeros((64, 64, 3), np.uint8)),
                      "images/syn-001.png: mask masks/syn-001.png has 3 channels, expected one"),
    "duplicate": (lambda d: shutil.copy(d / "images/syn-002.png", d / "images/syn-001.png"),
                  "images/syn-001.png: duplicate: the same pixels as another image"),
    "too small": (lambda d: (save(d / "images/syn-001.png", np.zeros((24, 64, 3), np.uint8)),
                             save(d / "masks/syn-001.png", np.zeros((24, 64), np.uint8))),
                  "images/syn-001.png: smaller side 24 px is below partition.side = 32"),
    "mixed channels": (lambda d: save(d / "images/syn-001.png", np.full((64, 64), 9, np.uint8)),
                       "images/syn-001.png: 1 channels where the others have 3"),
    "unsafe name": (lambda d: ((d / "images/syn-005.png").rename(d / "images/syn 005.png"),
                               (d / "masks/syn-005.png").rename(d / "masks/syn 005.png")),
                    "images/syn 005.png: file name not filesystem-safe"),
}


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_each_dataset_defect_is_named(dataset: Path, defect: str) -> None:
    damage, reason = DEFECTS[defect]
    damage(dataset)
    report = validate_dataset(dataset, 2, 32)
    assert not report.success
    assert any(r.startswith(reason) for r in report.reasons), report.reasons


def test_the_duplicate_pair_is_named_both_ways(dataset: Path) -> None:
    shutil.copy(dataset / "images/syn-002.png", dataset / "images/syn-001.png")
    report = validate_dataset(dataset, 2, 32)
    assert [r.split(":")[0] for r in report.reasons] == ["images/syn-001.png", "images/syn-002.png"]


def test_split_checks(dataset: Path) -> None:
    split = {**SPLIT, "test": []}
    report = validate_dataset(dataset, 2, 32, split, split_intact=False, queried_stems={"syn-004", "syn-001"})
    assert report.reasons == [
        "images/syn-005.png: not in the frozen split (the dataset changed after the split was frozen)",
        "images/syn-004.png: regions of this image were queried, but it is in the val split",
        "split.json: differs from the split frozen at init (ledger split_frozen)",
    ]


def test_an_empty_folder_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(ValidationFailed, match="images: no images"):
        validate_dataset(tmp_path, 2, 32)


# -- label batches -------------------------------------------------------------------------------------

A, B = "s_y0000_x0000_4x4", "s_y0000_x0002_4x4"  # B reaches past a 6-px-wide image: 4 x 2 inside
REQUESTED = {A: (4, 4), B: (4, 2)}


def entry(name: str, array: np.ndarray | None = None, data: bytes | None = None, kind: str = "file") -> BatchEntry:
    data = png_bytes(array) if array is not None else data
    return BatchEntry(name, kind, len(data) if data is not None else 40, data)


def good() -> list[BatchEntry]:
    a = np.zeros((4, 4), np.uint8)
    a[1:3, 1:3] = 255
    return [entry(f"{A}.png", a), entry(f"{B}.png", np.ones((4, 2), np.uint8))]


def check(entries: list[BatchEntry], allow_empty: bool = True, max_bytes: int = 10_000, accepted: bool = False,
          classes: int = 2):
    return validate_label_batch(entries, REQUESTED, classes, allow_empty, max_bytes, 1, accepted)


def test_a_good_batch_passes() -> None:
    report = check(good())
    assert report.success and report.reasons == []
    assert set(report.result) == {"files", "batch"}


BAD_BATCHES: dict[str, tuple[Callable[[list[BatchEntry]], list[BatchEntry]], dict, str]] = {
    "missing": (lambda e: e[:1], {},
                f"{B}.png: no mask uploaded for this requested region"),
    "extra": (lambda e: e + [entry("s_y0004_x0000_4x4.png", np.zeros((4, 4), np.uint8))], {},
              "s_y0004_x0000_4x4.png: not a requested region id (expected <region id>.png)"),
    "unreadable": (lambda e: [e[0], entry(f"{B}.png", data=b"GIF89a not a png")], {},
                   f"{B}.png: not a readable PNG"),
    "not single channel": (lambda e: [e[0], entry(f"{B}.png", np.zeros((4, 2, 3), np.uint8))], {},
                           f"{B}.png: 3 channels, a mask has one"),
    "wrong size": (lambda e: [e[0], entry(f"{B}.png", np.zeros((4, 4), np.uint8))], {},
                   f"{B}.png: size 4 x 4 (height x width), the region's in-image part is 4 x 2"),
    "values": (lambda e: [e[0], entry(f"{B}.png", np.full((4, 2), 7, np.uint8))], {},
               f"{B}.png: 8 pixels outside the classes (0..1 or {{0, 255}})"),
    "empty": (lambda e: [e[0], entry(f"{B}.png", np.zeros((4, 2), np.uint8))], {"allow_empty": False},
              f"{B}.png: all-empty mask, and oracle.allow_empty_masks is false"),
    "too big": (lambda e: [e[0], BatchEntry(f"{B}.png", "file", 10_001, None)], {},
                f"{B}.png: 10001 bytes, over oracle.max_file_bytes = 10000"),
    "path separator": (lambda e: e + [entry(f"sub/{A}.png", np.zeros((4, 4), np.uint8))], {},
                       f"sub/{A}.png: path separator in the name"),
    "dot dot": (lambda e: e + [entry(f"../{A}.png", np.zeros((4, 4), np.uint8))], {},
                f"../{A}.png: '.' or '..' path segment in the name"),
    "absolute": (lambda e: e + [entry(f"/{A}.png", np.zeros((4, 4), np.uint8))], {},
                 f"/{A}.png: absolute path"),
    "hidden": (lambda e: e + [entry(f".{A}.png", np.zeros((4, 4), np.uint8))], {},
               f".{A}.png: hidden file"),
    "symlink": (lambda e: [e[0], BatchEntry(f"{B}.png", "symlink", 12, None)], {},
                f"{B}.png: a symlink, not a plain file (never followed)"),
    "second submission": (lambda e: e, {"accepted": True},
                          "batch: round 1 already has an accepted batch; a second one is refused"),
}


@pytest.mark.parametrize("kind", sorted(BAD_BATCHES))
def test_each_bad_batch_kind_is_named(kind: str) -> None:
    change, options, reason = BAD_BATCHES[kind]
    report = check(change(good()), **options)
    assert not report.success
    assert reason in report.reasons, report.reasons


def test_reasons_are_sentences_and_the_report_keeps_the_expectation_behind_each() -> None:
    report = check([entry(f"{A}.png", np.zeros((4, 4, 3), np.uint8)), entry(f"{B}.png", np.zeros((2, 4), np.uint8))])
    assert report.reasons == [f"{A}.png: 3 channels, a mask has one",
                              f"{B}.png: size 2 x 4 (height x width), the region's in-image part is 4 x 2"]
    saved = json.loads(json.dumps(report.to_dict()))
    assert saved["checks"] == ["expect_column_values_to_be_in_set(channels)",
                               "expect_column_pair_values_to_be_equal(size, expected_size)"]
    assert ValidationReport.from_dict(saved) == report


def test_value_conventions() -> None:
    binary01 = [good()[0], entry(f"{B}.png", np.array([[0, 1]] * 4, np.uint8))]
    assert check(binary01).success
    three = [entry(f"{A}.png", np.full((4, 4), 2, np.uint8)), entry(f"{B}.png", np.zeros((4, 2), np.uint8))]
    assert check(three, classes=3).success
    with_255 = [entry(f"{A}.png", np.full((4, 4), 255, np.uint8)), three[1]]
    assert f"{A}.png: 16 pixels outside the classes (0..2)" in check(with_255, classes=3).reasons[0]
    mixed = np.array([[0, 1, 255, 255]], np.uint8)
    assert pixels_outside_classes(mixed, 2, binary_255=True) == 2
