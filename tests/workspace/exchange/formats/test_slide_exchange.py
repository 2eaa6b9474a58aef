"""The label exchange on a whole-slide image cut at pyramid level 1: crops read per region, QuPath
coordinates at level 0 (region coordinates x 2) and read back to the level's masks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from activeseg.core.config import SlidesConfig
from activeseg.core.data import Dataset, load_dataset
from activeseg.core.partition import Region
from activeseg.core.synthetic import synthesize_slides
from activeseg.loop.oracle import ground_truth
from activeseg.workspace.exchange.images import to_uint8
from activeseg.workspace.exchange.formats import cvat, qupath
from activeseg.workspace.exchange.formats.service import make_request

NAMES2 = ("background", "foreground")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    root = synthesize_slides(tmp_path_factory.mktemp("data") / "data", n=1, blocks=(2, 3), block=64, tile=32)
    return load_dataset(root, 2, SlidesConfig(level=1))


def test_qupath_coordinates_are_level_0_and_read_back(dataset: Dataset, tmp_path: Path) -> None:
    regions = [Region("slide-0", 0, 0, 32, 32), Region("slide-0", 16, 32, 48, 64)]
    request = make_request(dataset, 1, [(r, 0.5) for r in regions], NAMES2)
    assert request.downsample == {"slide-0": 2.0}
    truth = {item.id: ground_truth(dataset, Region(item.stem, *item.box)) for item in request.items}
    files = qupath.export(request, truth, tmp_path / "qupath", lambda stem: None)
    assert files == [tmp_path / "qupath" / "slide-0.geojson"]  # no whole-slide PNG
    features = json.loads(files[0].read_text())["features"]
    rectangles = [f["geometry"]["coordinates"][0] for f in features if f["properties"]["isLocked"]]
    assert [min(map(tuple, ring)) for ring in rectangles] == [(0, 0), (64, 32)]  # (x, y) at level 0
    assert [max(map(tuple, ring)) for ring in rectangles] == [(64, 64), (128, 96)]
    masks = qupath.read(tmp_path / "qupath", request)
    assert set(masks) == set(truth) and all(np.array_equal(masks[k], truth[k]) for k in truth)
    assert any(truth[k].any() for k in truth)  # the round trip carried objects, not only background


def test_crops_are_read_per_region(dataset: Dataset, tmp_path: Path) -> None:
    request = make_request(dataset, 1, [(Region("slide-0", 32, 32, 64, 64), None)], NAMES2)
    item = request.items[0]
    level1 = tifffile.TiffFile(dataset.samples["slide-0"].image_path).series[0].levels[1].asarray()
    y0, x0, y1, x1 = item.crop_box
    np.testing.assert_array_equal(to_uint8(dataset.read_box("slide-0", item.crop_box)), level1[y0:y1, x0:x1])
    truth = {item.id: ground_truth(dataset, Region(item.stem, *item.box))}
    cvat.export(request, truth, tmp_path / "cvat", lambda it: to_uint8(dataset.read_box(it.stem, it.crop_box)))
    masks = cvat.read(tmp_path / "cvat", request)
    np.testing.assert_array_equal(masks[item.id], truth[item.id])
