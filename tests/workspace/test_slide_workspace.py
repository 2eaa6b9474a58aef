"""Whole-slide pools through the campaign workspace: the dataset suite checks each slide without reading
it whole, and ``Workspace.init`` on four slides then
one round through the workspace steps (QuPath export at level 0, the report's region views, audit)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from activeseg.cli.main import main
from activeseg.core.config import SlidesConfig
from activeseg.core.partition import Region
from activeseg.core.slides import write_pyramid
from activeseg.core.util import canonical_json, sha256_file, sha256_text
from activeseg.loop.oracle import ground_truth
from activeseg.report.campaign import region_views
from activeseg.workspace import Workspace
from activeseg.workspace.exchange.images import to_uint8
from activeseg.workspace.exchange.formats.service import PREDICTION, export_round
from activeseg.workspace.validation import validate_dataset
from activeseg.workspace.validation.dataset import dataset_table, mask_sample_origins
from tests.conftest import TINY
from tests.core.test_slides import BLOCK, slide_dir, written_slides  # noqa: F401  (fixtures)
from tests.people import enrol

LEVEL1 = SlidesConfig(level=1, eval_tile=32)  # the synthetic slides (192 x 128 at level 0) are 96 x 64 there
STEMS = [f"slide-{i}" for i in range(4)]


def test_mask_sample_origins_hand_checked() -> None:
    assert mask_sample_origins(128, 192) == [(0, 0)]  # a small mask is read whole: one tile
    origins = mask_sample_origins(2000, 1100)  # 4 x 4 tiles of 256 px from edge to edge
    assert sorted({y for y, _ in origins}) == [0, 581, 1163, 1744]
    assert sorted({x for _, x in origins}) == [0, 281, 563, 844] and len(origins) == 16


def test_slides_pass_the_dataset_suite_with_or_without_a_mask(slide_dir: Path) -> None:  # noqa: F811
    split = {"train": STEMS[:2], "val": [STEMS[2]], "test": [STEMS[3]]}
    report = validate_dataset(slide_dir, 2, 32, split, queried_stems={"slide-0"}, slides=LEVEL1)
    assert report.success and report.reasons == []
    (slide_dir / "slide_masks" / "slide-2.tif").unlink()  # a human campaign: no ground truth for it
    image = np.full((128, 128, 3), 255, np.uint8)
    image[:, :48] = (180, 60, 140)  # tissue: the left 48 columns
    write_pyramid(slide_dir / "slides" / "slide-3.tif", image, levels=2, tile=32)
    write_pyramid(slide_dir / "slide_masks" / "slide-3.tif", np.zeros((128, 128), np.uint8), 1, 32)
    assert validate_dataset(slide_dir, 2, 32, split, slides=LEVEL1).success
    table = dataset_table(slide_dir, 2, split, set(), SlidesConfig(level=0, min_tissue=0.5, eval_tile=32))
    rows = {row["stem"]: row for row in table.to_dict("records")}
    assert rows["slide-2"]["kind"] == "slide" and rows["slide-2"]["mask"] != rows["slide-2"]["mask"]  # NaN: none
    drawn = rows["slide-3"]  # 32 px tiles at level 0 with half their area stained: 4 rows x 2 columns
    assert (drawn["tissue_tiles"], drawn["min_side"], drawn["channels"], drawn["levels"]) == (8, 128, 3, 2)
    assert (drawn["image_size"], drawn["mask_size"], drawn["outside_classes"]) == ("128 x 128", "128 x 128", 0)
    assert drawn["content_sha256"] == sha256_file(slide_dir / "slides" / "slide-3.tif")


SLIDE_DEFECTS: dict[str, tuple[Callable[[Path], None], str]] = {
    "unreadable slide": (lambda d: (d / "slides/slide-0.tif").write_bytes(b"not a tiff"),
                         "slides/slide-0.tif: unreadable slide ("),
    "mask size": (lambda d: write_pyramid(d / "slide_masks/slide-1.tif", np.zeros((64, 64), np.uint8), 1, 32),
                  "slides/slide-1.tif: mask size 64 x 64 (height x width) differs from the slide's level 0 "
                  "128 x 192"),
    "mask values": (lambda d: write_pyramid(d / "slide_masks/slide-0.tif", np.full((128, 192), 7, np.uint8), 1, 32),
                    "slides/slide-0.tif: 24576 mask pixels (of the sampled level-0 tiles) outside the classes 0..1"),
    "mask channels": (lambda d: write_pyramid(d / "slide_masks/slide-0.tif", np.zeros((128, 192, 3), np.uint8), 1, 32),
                      "slides/slide-0.tif: mask slide_masks/slide-0.tif has 3 channels, expected one"),
    "blank slide": (lambda d: write_pyramid(d / "slides/slide-2.tif", np.full((128, 192, 3), 255, np.uint8), 3, 32),
                    "slides/slide-2.tif: no tissue tile of 32 px at level 1 with at least data.slides.min_tissue = "
                    "0.25 tissue (a blank slide?)"),
    "orphan mask": (lambda d: (d / "slides/slide-3.tif").unlink(),
                    "slide_masks/slide-3.tif: no slide in slides/ for stem slide-3"),
}


@pytest.mark.parametrize("defect", sorted(SLIDE_DEFECTS))
def test_each_slide_defect_is_named(slide_dir: Path, defect: str) -> None:  # noqa: F811
    damage, reason = SLIDE_DEFECTS[defect]
    damage(slide_dir)
    report = validate_dataset(slide_dir, 2, 32, slides=LEVEL1)
    assert not report.success and any(r.startswith(reason) for r in report.reasons), report.reasons


def test_a_missing_pyramid_level_is_named(slide_dir: Path) -> None:  # noqa: F811
    report = validate_dataset(slide_dir, 2, 32, slides=SlidesConfig(level=3))
    assert report.reasons == [f"slides/{s}.tif: no pyramid level 3 (data.slides.level); the slide has levels 0..2"
                              for s in STEMS]


def test_a_round_on_slides_through_the_workspace(slide_dir: Path, tmp_path: Path,  # noqa: F811
                                                 capsys: pytest.CaptureFixture) -> None:
    """Four slides (two in the pool, one for validation, one for the test) cut at level 1; tiny model."""
    ws = Workspace.init(tmp_path / "ws", slide_dir, overrides=[*TINY, "query.budget_pixels=2048",
                                                               "data.slides.level=1", "data.slides.eval_tile=32"])
    enrol(ws.root)
    for part in ("slides", "slide_masks"):
        for stem in STEMS:
            assert sha256_file(ws.root / "data" / part / f"{stem}.tif") == sha256_file(slide_dir / part / f"{stem}.tif")
    assert "data.dvc" in ws.git("ls-files").split()
    registered = ws.ledger.events(type="dataset_registered")[0].data
    files = [[s, sha256_file(slide_dir / "slides" / f"{s}.tif"), sha256_file(slide_dir / "slide_masks" / f"{s}.tif")]
             for s in STEMS]
    assert (registered["images"], registered["slides"]) == (0, 4)
    assert registered["content_sha256"] == sha256_text(canonical_json(files))
    split = ws.split()
    assert len(split["train"]) == 2 and ws.validate()["success"]
    pool = json.loads(ws.partition().read_text())
    assert pool and all(r["stem"] in split["train"] and r["box"][1] < BLOCK for r in pool)  # none on blank glass

    ws.train(1)
    ws.query(1)
    regions = [r.region() for r in ws.record(1).queried.regions]
    assert regions and all(r.stem in split["train"] and r.x0 < BLOCK for r in regions)
    summary = export_round(ws, 1, "qupath", tmp_path / "qupath",
                           prediction=lambda item: ground_truth(ws.dataset, Region(item.stem, *item.box)))
    stems = sorted({r.stem for r in regions})
    assert (summary["regions"], summary["files"]) == (len(regions), len(stems) + 1)  # + the predictions
    assert sorted(p.name for p in (tmp_path / "qupath").glob("*.*")) == sorted(  # no whole-slide PNG
        [f"{s}.geojson" for s in stems] + [PREDICTION])
    rectangles = {tuple(min(map(tuple, f["geometry"]["coordinates"][0])))
                  for s in stems for f in json.loads((tmp_path / "qupath" / f"{s}.geojson").read_text())["features"]
                  if f["properties"]["isLocked"]}
    assert rectangles == {(2 * r.x0, 2 * r.y0) for r in regions}  # (x, y) at level 0: level 1 x 2

    ws.simulate_labels(1)
    assert ws.approve(1, "pi")["files"] == len(regions)
    evaluated = ws.evaluate(1)
    per_image = json.loads((ws.root / "metrics" / "evaluation.json").read_text())["per_image"]
    assert evaluated["round"] == 1 and per_image and all(k.startswith(split["test"][0] + "_y") for k in per_image)
    views = region_views(ws, ws.record(1))
    assert [v.id for v in views] == [r.id for r in regions]
    for view in views:  # the report's crops: read per region, with their context
        y0, x0, y1, x1 = view.inner
        region = next(r for r in regions if r.id == view.id)
        assert (y1 - y0, x1 - x0) == (region.y1 - region.y0, region.x1 - region.x0)
        np.testing.assert_array_equal(view.image[y0:y1, x0:x1], to_uint8(ws.dataset.region_pixels(region)))
    assert ws.verify().ok
    assert main(["audit", "verify", "--workspace", str(ws.root)]) == 0
    capsys.readouterr()
