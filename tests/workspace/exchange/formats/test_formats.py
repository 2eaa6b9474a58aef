"""The file formats without a workspace: round trips with the ground truth as the prediction, a
QuPath-written GeoJSON, and every kind of bad export named."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import shapely
from PIL import Image
from shapely.geometry import Polygon
from skimage.measure import label

from activeseg.core.data import Dataset, load_dataset
from activeseg.core.partition import Region, partition_image
from activeseg.core.synthetic import synthesize
from activeseg.loop.oracle import ground_truth
from activeseg.metrics import dice
from activeseg.workspace.exchange.images import to_uint8
from activeseg.workspace.exchange.formats import FormatError, cvat, labelstudio, qupath
from activeseg.workspace.exchange.formats.common import Request, RequestItem
from activeseg.workspace.exchange.formats.geometry import mask_polygons, rasterize
from activeseg.workspace.exchange.formats.service import make_request

NAMES2 = ("background", "foreground")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return load_dataset(synthesize(tmp_path_factory.mktemp("data") / "data", n=3, size=64, seed=0), classes=2)


@pytest.fixture(scope="module")
def request_(dataset: Dataset) -> Request:
    """Every 32 x 32 patch of the images, and one region reaching past the border (mirror-padded)."""
    regions = [r for stem in dataset.stems for r in partition_image(stem, 64, 64, 32, 0.0)]
    regions.append(Region(dataset.stems[0], 40, 40, 72, 72))
    return make_request(dataset, 2, [(r, 0.5 + i / 100) for i, r in enumerate(regions)], NAMES2,
                        {"syn-x_y0000_x0000_32x32": 1})


def truth(dataset: Dataset, request: Request) -> dict[str, np.ndarray]:
    return {item.id: ground_truth(dataset, Region(item.stem, *item.box)) for item in request.items}


def crop_of(dataset: Dataset):
    def crop(item: RequestItem) -> np.ndarray:
        y0, x0, y1, x1 = item.crop_box
        return to_uint8(dataset.image(item.stem)[y0:y1, x0:x1])
    return crop


def export(fmt: str, dataset: Dataset, request: Request, out: Path, predictions=None) -> Path:
    predictions = predictions or truth(dataset, request)
    if fmt == "qupath":
        qupath.export(request, predictions, out)
    elif fmt == "cvat":
        cvat.export(request, predictions, out, crop_of(dataset))
    else:  # what Label Studio exports once every prediction was accepted as the annotation
        labelstudio.export(request, predictions, out, crop_of(dataset))
        tasks = annotated(json.loads((out / "tasks.json").read_text()))
        (out / "export.json").write_text(json.dumps(tasks))
        return out / "export.json"
    return out


READERS = {"qupath": qupath.read, "cvat": cvat.read, "labelstudio": labelstudio.read}


# -- geometry ------------------------------------------------------------------------------------------

def test_mask_polygons_rasterize_back_bit_exact_with_holes() -> None:
    rng = np.random.default_rng(0)
    for _ in range(40):
        mask = rng.random((17, 21)) < rng.uniform(0.2, 0.8)
        polygons = mask_polygons(mask, 3, 5)
        assert all(p.is_valid for p in polygons)
        assert (rasterize(polygons, (5, 3, 22, 24)) == mask).all()
        assert len(polygons) == label(mask, connectivity=1).max()  # one polygon per 4-connected object
        assert shapely.union_all(polygons).area == pytest.approx(sum(p.area for p in polygons))  # no overlap


def test_a_hole_is_an_interior_ring() -> None:
    ring = np.zeros((8, 8), bool)
    ring[1:7, 1:7] = True
    ring[3:5, 3:5] = False
    (polygon,) = mask_polygons(ring, 10, 20)
    assert polygon.is_valid and len(polygon.interiors) == 1
    # marching squares halfway between pixel centres: the 6 x 6 square and the 2 x 2 hole with their
    # corners cut (a half-pixel triangle, 1/8 px^2, at each corner)
    assert polygon.exterior.bounds == (11, 21, 17, 27)
    assert polygon.interiors[0].bounds == (13, 23, 15, 25)
    assert polygon.area == (36 - 4 / 8) - (4 - 4 / 8)
    assert (rasterize([polygon], (20, 10, 28, 18)) == ring).all()


def test_objects_touching_at_a_corner_are_two_polygons() -> None:
    mask = np.zeros((5, 5), bool)
    mask[1:3, 1:3] = True  # 2 x 2 block
    mask[3, 3] = True  # one pixel touching its corner diagonally
    first, second = sorted(mask_polygons(mask), key=lambda p: p.bounds)
    assert first.bounds == (1.0, 1.0, 3.0, 3.0) and second.bounds == (3.0, 3.0, 4.0, 4.0)
    assert first.area == 4 - 4 / 8 and second.area == 0.5  # the single pixel is a diamond
    assert not first.intersects(second)  # not even at a point: both stay valid GeoJSON polygons
    assert (rasterize([first, second], (0, 0, 5, 5)) == mask).all()


def test_pixel_aligned_rectangle_rasterizes_exactly() -> None:
    square = [Polygon([(2, 1), (6, 1), (6, 4), (2, 4)])]
    expected = np.zeros((8, 8), bool)
    expected[1:4, 2:6] = True
    assert (rasterize(square, (0, 0, 8, 8)) == expected).all()


def test_rasterize_subtracts_holes_but_keeps_an_island_inside_a_hole() -> None:
    frame = Polygon([(0, 0), (6, 0), (6, 6), (0, 6)], [[(1, 1), (5, 1), (5, 5), (1, 5)]])
    island = Polygon([(2, 2), (4, 2), (4, 4), (2, 4)])
    expected = np.ones((6, 6), bool)
    expected[1:5, 1:5] = False
    expected[2:4, 2:4] = True
    assert (rasterize([frame, island], (0, 0, 6, 6)) == expected).all()
    assert (rasterize([island, frame], (0, 0, 6, 6)) == expected).all()


# -- round trips ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["qupath", "cvat", "labelstudio"])
def test_round_trip_gives_the_ground_truth_back(fmt: str, dataset: Dataset, request_: Request, tmp_path: Path) -> None:
    out = export(fmt, dataset, request_, tmp_path / fmt)
    masks = READERS[fmt](out, request_)
    expected = truth(dataset, request_)
    assert set(masks) == set(expected)
    for region_id, mask in masks.items():
        assert mask.dtype == np.uint8 and mask.shape == expected[region_id].shape
        assert np.array_equal(mask, expected[region_id]), region_id  # bit-exact, polygons included
    scores = [dice(masks[i] == 1, expected[i] == 1) for i in masks if expected[i].any()]
    assert min(scores) >= 0.99


def test_round_trip_three_classes(dataset: Dataset, request_: Request, tmp_path: Path) -> None:
    names = ("background", "nucleus", "stroma")
    request = Request(request_.round, names, request_.items[:-1])  # no overlapping regions
    rng = np.random.default_rng(1)
    predictions = {item.id: rng.integers(0, 3, item.shape).astype(np.uint8) for item in request.items}
    for fmt in READERS:
        masks = READERS[fmt](export(fmt, dataset, request, tmp_path / fmt, predictions), request)
        assert all(np.array_equal(masks[i], predictions[i]) for i in predictions), fmt


def test_qupath_export_is_what_qupath_reads(dataset: Dataset, request_: Request, tmp_path: Path) -> None:
    out = export("qupath", dataset, request_, tmp_path)
    collection = json.loads((out / f"{dataset.stems[0]}.geojson").read_text())
    assert collection["type"] == "FeatureCollection"
    rects = [f for f in collection["features"] if f["properties"]["classification"]["name"] == "activeseg request"]
    first = rects[0]
    assert first["properties"]["isLocked"] is True and first["properties"]["objectType"] == "annotation"
    assert first["properties"]["measurements"] == {"activeseg round": 2, "activeseg rank": 1, "activeseg score": 0.5}
    assert first["geometry"]["coordinates"] == [[[0.0, 0.0], [32.0, 0.0], [32.0, 32.0], [0.0, 32.0], [0.0, 0.0]]]
    # the border region is clipped to the image: its rectangle is its in-image part
    assert rects[-1]["geometry"]["coordinates"][0][2] == [64.0, 64.0]


def test_cvat_and_labelstudio_exports_are_well_formed(dataset: Dataset, request_: Request, tmp_path: Path) -> None:
    root = ET.parse(export("cvat", dataset, request_, tmp_path / "c") / "annotations.xml").getroot()
    images = root.findall("image")
    assert len(images) == len(request_.items) and root.findtext("version") == "1.1"
    mask = images[0].find("mask")
    assert mask is not None and re.fullmatch(r"\d+(, \d+)*", mask.get("rle"))
    assert (tmp_path / "c" / "images" / images[0].get("name")).is_file()
    out = export("labelstudio", dataset, request_, tmp_path / "l").parent
    assert "<BrushLabels" in (out / "labeling_config.xml").read_text()
    tasks = json.loads((out / "tasks.json").read_text())
    assert tasks[0]["data"]["region_id"] == request_.items[0].id
    assert tasks[0]["predictions"][0]["score"] == 0.5
    assert tasks[0]["predictions"][0]["result"][0]["type"] == "brushlabels"


# -- a GeoJSON as QuPath writes it ---------------------------------------------------------------------

def qupath_written(request: Request, item: RequestItem) -> list[dict]:
    """QuPath 0.4-style features (a list, as "Export objects" writes with "pretty" off): the locked request
    rectangle, a MultiPolygon with a hole and a separate square, an older-style measurement list."""
    y0, x0, y1, x1 = item.box
    return [
        {"type": "Feature", "id": "2b8a77f6-0d4e-4a89-9e38-6a1b9d6c1a10",
         "geometry": {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]},
         "properties": {"objectType": "annotation", "name": item.id, "isLocked": True,
                        "classification": {"name": "activeseg request", "color": [255, 255, 0]},
                        "measurements": [{"name": "activeseg round", "value": request.round}]}},
        {"type": "Feature", "id": "6f3e1c1a-8d7b-4f0e-b3f4-0c2d5a9e7b21",
         "geometry": {"type": "MultiPolygon", "coordinates": [
             [[[x0 + 2, y0 + 2], [x0 + 12, y0 + 2], [x0 + 12, y0 + 12], [x0 + 2, y0 + 12], [x0 + 2, y0 + 2]],
              [[x0 + 5, y0 + 5], [x0 + 5, y0 + 8], [x0 + 8, y0 + 8], [x0 + 8, y0 + 5], [x0 + 5, y0 + 5]]],
             [[[x0 + 20, y0 + 20], [x0 + 24, y0 + 20], [x0 + 24, y0 + 26], [x0 + 20, y0 + 26],
               [x0 + 20, y0 + 20]]]]},
         "properties": {"objectType": "annotation", "isLocked": False,
                        "classification": {"name": "foreground", "color": [200, 0, 0]}, "measurements": {}}},
        {"type": "Feature", "id": "9c1d2e3f-0000-4000-8000-000000000001",
         "geometry": {"type": "Polygon", "coordinates": [
             [[x0 + 14, y0 + 2], [x0 + 18, y0 + 2], [x0 + 18, y0 + 6], [x0 + 14, y0 + 6], [x0 + 14, y0 + 2]]]},
         "properties": {"objectType": "detection", "classification": {"name": "foreground", "colorRGB": -3670016}}},
    ]


def test_qupath_written_geojson_imports(dataset: Dataset, tmp_path: Path) -> None:
    item_region = Region(dataset.stems[1], 0, 0, 32, 32)
    request = make_request(dataset, 3, [(item_region, 0.9)], NAMES2)
    (tmp_path / "export.geojson").write_text(json.dumps(qupath_written(request, request.items[0])))
    mask = qupath.read(tmp_path / "export.geojson", request)[item_region.id]
    expected = np.zeros((32, 32), np.uint8)
    expected[2:12, 2:12] = 1
    expected[5:8, 5:8] = 0  # the hole
    expected[20:26, 20:24] = 1
    expected[2:6, 14:18] = 1
    assert np.array_equal(mask, expected)


# -- bad exports ---------------------------------------------------------------------------------------

def small_request(dataset: Dataset) -> Request:
    regions = [(Region(dataset.stems[0], 0, 0, 32, 32), 0.9), (Region(dataset.stems[0], 32, 32, 64, 64), 0.8)]
    return make_request(dataset, 2, regions, NAMES2, {Region(dataset.stems[1], 0, 0, 32, 32).id: 1})


def bad_qupath(dataset: Dataset, tmp_path: Path, change) -> Path:
    request = small_request(dataset)
    export("qupath", dataset, request, tmp_path)
    path = tmp_path / f"{dataset.stems[0]}.geojson"
    data = json.loads(path.read_text())
    change(data["features"])
    path.write_text(json.dumps(data))
    return path


def outside(features: list) -> None:
    features.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [
        [[40, 2], [50, 2], [50, 12], [40, 12], [40, 2]]]}, "properties": {
        "objectType": "annotation", "classification": {"name": "foreground"}, "name": "stray"}})


def unknown_class(features: list) -> None:
    features[1]["properties"]["classification"]["name"] = "Tumor"


def missing_region(features: list) -> None:
    rects = [f for f in features if f["properties"]["classification"]["name"] == "activeseg request"]
    features.remove(rects[1])
    features[:] = [f for f in features if f["properties"].get("metadata", {}).get("activeseg_region_id")
                   != rects[1]["properties"]["name"]]


def other_round(features: list) -> None:
    features[0]["properties"]["measurements"]["activeseg round"] = 1


@pytest.mark.parametrize("change, message", [
    (outside, r"shapes outside the requested regions \(1; .*syn-000.geojson: feature \d+ 'stray' at x 40..50, "
              r"y 2..12$"),
    (unknown_class, r"feature 2 .*unknown class name 'Tumor'"),
    (missing_region, r"regions missing \(1 of 2\): syn-000_y0032_x0032_32x32"),
    (other_round, r"feature 1 'syn-000_y0000_x0000_32x32'.*round 1, not round 2: a different round's export"),
])
def test_bad_qupath_exports_are_named(change, message: str, dataset: Dataset, tmp_path: Path) -> None:
    path = bad_qupath(dataset, tmp_path, change)
    with pytest.raises(FormatError, match=message):
        qupath.read(path, small_request(dataset))


def test_malformed_files_are_named(dataset: Dataset, tmp_path: Path) -> None:
    request = small_request(dataset)
    (tmp_path / "broken.geojson").write_text('{"type": "FeatureCollection", "features": [')
    with pytest.raises(FormatError, match=r"broken.geojson: malformed JSON at line 1"):
        qupath.read(tmp_path / "broken.geojson", request)
    (tmp_path / "broken.xml").write_text("<annotations><image name='x.png'></annotations>")
    with pytest.raises(FormatError, match=r"broken.xml: malformed XML"):
        cvat.read(tmp_path / "broken.xml", request)
    (tmp_path / "ls.json").write_text("[{\"data\": 3}]")
    with pytest.raises(FormatError, match=r"ls.json: task 0 has no 'data'"):
        labelstudio.read(tmp_path / "ls.json", request)
    (tmp_path / "bomb.xml").write_text('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e "x">]><annotations>&e;'
                                       "</annotations>")
    with pytest.raises(FormatError, match=r"bomb.xml: XML refused"):
        cvat.read(tmp_path / "bomb.xml", request)


def shape(name: str, ring: list[tuple[float, float]]) -> dict:
    """A foreground polygon feature as QuPath writes it: ``ring`` its (x, y) corners."""
    return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[*map(list, ring), list(ring[0])]]},
            "properties": {"objectType": "annotation", "classification": {"name": "foreground"}, "name": name}}


def qupath_with(dataset: Dataset, tmp_path: Path, *shapes: dict) -> tuple[Request, Path, int]:
    """``small_request``'s export of empty predictions with ``shapes`` added, and the first one's index."""
    request = small_request(dataset)
    qupath.export(request, {item.id: np.zeros(item.shape, np.uint8) for item in request.items}, tmp_path)
    path = tmp_path / f"{dataset.stems[0]}.geojson"
    data = json.loads(path.read_text())
    first = len(data["features"])
    data["features"] += list(shapes)
    path.write_text(json.dumps(data))
    return request, path, first


def test_qupath_shapes_crossing_a_region_edge_are_clipped(dataset: Dataset, tmp_path: Path) -> None:
    """Regions 0 (x, y 0..32) and 1 (x, y 32..64) of syn-000. A triangle crossing region 0's right edge
    at x 32, a square over the corner both regions share, and one reaching 0.5 px past region 0's
    bottom (within the tolerance: not recorded)."""
    request, path, k = qupath_with(dataset, tmp_path, shape("triangle", [(28, 8), (40.5, 8), (28, 20.5)]),
                                   shape("corner", [(30, 30), (34, 30), (34, 34), (30, 34)]),
                                   shape("edge", [(2, 30), (4, 30), (4, 32.5), (2, 32.5)]))
    labels = qupath.read_labels(path, request)
    first, second = (item.id for item in request.items)
    # the triangle keeps the pixel centres (c + 0.5, r + 0.5) with x > 28, y > 8, x + y < 48.5 and x < 32:
    # columns 28..31 of rows 8..19, 8..18, 8..17, 8..16 (12 + 11 + 10 + 9 pixels)
    expected = np.zeros((32, 32), np.uint8)
    for column, last_row in zip(range(28, 32), (19, 18, 17, 16)):
        expected[8:last_row + 1, column] = 1
    expected[30:32, 30:32] = 1  # the corner square's quarter in region 0
    expected[30:32, 2:4] = 1  # the edge shape, rows 30 and 31 (row 32 is not in the region)
    assert int(expected.sum()) == 42 + 4 + 4
    assert np.array_equal(labels.masks[first], expected)
    corner = np.zeros((32, 32), np.uint8)
    corner[0:2, 0:2] = 1  # its quarter in region 1
    assert np.array_equal(labels.masks[second], corner)
    assert labels.clipped == {first: [f"syn-000.geojson: feature {k + 1} 'triangle'",
                                      f"syn-000.geojson: feature {k + 2} 'corner'"],
                              second: [f"syn-000.geojson: feature {k + 2} 'corner'"]}
    assert np.array_equal(qupath.read(path, request)[first], expected)


def test_every_qupath_shape_outside_the_regions_is_named(dataset: Dataset, tmp_path: Path) -> None:
    request, path, k = qupath_with(dataset, tmp_path, shape("stray", [(40, 2), (50, 2), (50, 12), (40, 12)]),
                                   shape("inside", [(2, 2), (6, 2), (6, 6), (2, 6)]),
                                   shape("below", [(4, 40), (8, 40), (8, 44)]))
    with pytest.raises(FormatError) as caught:
        qupath.read(path, request)
    assert str(caught.value) == (
        "shapes outside the requested regions (2; a shape must overlap a region's rectangle, what lies past it is "
        f"clipped): {path}: feature {k + 1} 'stray' at x 40..50, y 2..12; feature {k + 3} 'below' at x 4..8, y 40..44")


def cvat_xml(dataset: Dataset, tmp_path: Path, change) -> Path:
    request = small_request(dataset)
    out = export("cvat", dataset, request, tmp_path)
    tree = ET.parse(out / "annotations.xml")
    change(tree.getroot())
    tree.write(out / "annotations.xml")
    return out / "annotations.xml"


def cvat_outside(root: ET.Element) -> None:
    """A one-pixel mask in the crop's context margin, outside region 1."""
    image = root.findall("image")[1]
    ET.SubElement(image, "mask", {"label": "foreground", "rle": "0, 1", "left": "0", "top": "0", "width": "1",
                                  "height": "1"})


@pytest.mark.parametrize("change, message", [
    (cvat_outside, r"image 1 'syn-000_y0032_x0032_32x32.png', <mask> \d: mask reaches outside the region"),
    (lambda r: r.find("image/mask").set("label", "cell"), r"<mask> 0: unknown class name 'cell'"),
    (lambda r: r.remove(r.findall("image")[1]), r"regions missing \(1 of 2\): syn-000_y0032_x0032_32x32"),
    (lambda r: r.find("image").set("name", "../../etc/passwd.png"), r"image 0 '../../etc/passwd.png'.*not a plain file"),
    (lambda r: r.find("image").set("name", "syn-001_y0000_x0000_32x32.png"),
     r"belongs to round 1's request, not round 2's: this is a different round's export"),
    (lambda r: r.find("meta/task/name").__setattr__("text", "activeseg round 7"), r"different round's export"),
    (lambda r: r.find("image/mask").set("rle", "1, 2, 3"), r"<mask> 0: RLE counts sum to 6"),
    (lambda r: ET.SubElement(r.find("image"), "points", {"label": "foreground", "points": "1,1"}),
     r"<points> \d+: only <mask> and <polygon> are read"),
])
def test_bad_cvat_exports_are_named(change, message: str, dataset: Dataset, tmp_path: Path) -> None:
    with pytest.raises(FormatError, match=message):
        cvat.read(cvat_xml(dataset, tmp_path, change), small_request(dataset))


def test_cvat_polygon_is_rasterized(dataset: Dataset, tmp_path: Path) -> None:
    def polygon_only(root: ET.Element) -> None:
        for image in root.findall("image"):
            for child in list(image):
                image.remove(child)
        ET.SubElement(root.find("image"), "polygon", {"label": "foreground", "points": "0,0;4,0;4,3;0,3"})
    request = small_request(dataset)
    path = cvat_xml(dataset, tmp_path, polygon_only)
    masks = cvat.read(path, request)
    expected = np.zeros((32, 32), np.uint8)
    expected[0:3, 0:4] = 1  # region 0 starts at the crop's corner (no margin above or left of the image)
    assert np.array_equal(masks[request.items[0].id], expected)
    assert not masks[request.items[1].id].any()


def annotated(tasks: list) -> list:
    """Label Studio's export: each task's prediction accepted as the annotation, by user 7."""
    for task in tasks:
        task["id"] = 100 + len(task)
        task["annotations"] = [{"id": 1, "completed_by": 7, "was_cancelled": False,
                                "result": task.pop("predictions")[0]["result"]}]
    return tasks


def ls_export(dataset: Dataset, tmp_path: Path, change) -> Path:
    request = small_request(dataset)
    path = export("labelstudio", dataset, request, tmp_path)
    tasks = json.loads(path.read_text())
    change(tasks)
    path.write_text(json.dumps(tasks))
    return path


def test_labelstudio_export_round_trips(dataset: Dataset, tmp_path: Path) -> None:
    request = small_request(dataset)
    masks = labelstudio.read(ls_export(dataset, tmp_path, lambda tasks: None), request)
    assert all(np.array_equal(masks[i], m) for i, m in truth(dataset, request).items())


YELLOW = (255, 255, 0)


def test_labelstudio_images_show_the_yellow_box_the_config_names(dataset: Dataset, tmp_path: Path) -> None:
    """Region 1 (x, y 32..64 of a 64 x 64 image) has a 16 px context margin above and left: its crop is
    x, y 16..64 and the region is x, y 16..48 of the crop."""
    request = small_request(dataset)
    labelstudio.export(request, truth(dataset, request), tmp_path, crop_of(dataset))
    header = ET.fromstring((tmp_path / "labeling_config.xml").read_text()).find("Header").get("value")
    assert header == ("Region $region_id: paint only inside the yellow box, its yellow line included (the line "
                      "covers the region's edge pixels). Around the box is context to look at: paint there is "
                      "refused.")
    item = request.items[1]
    assert item.crop_box == (16, 16, 64, 64) and item.in_crop == (16, 16, 48, 48)
    shown = np.asarray(Image.open(tmp_path / "images" / f"{item.id}.png"))
    edge = np.zeros((48, 48), bool)  # the region's outermost rows and columns, in crop pixels
    edge[16, 16:48] = edge[47, 16:48] = edge[16:48, 16] = edge[16:48, 47] = True
    assert int(edge.sum()) == 4 * 32 - 4
    assert np.array_equal((shown == YELLOW).all(axis=2), edge)
    assert np.array_equal(shown[~edge], crop_of(dataset)(item)[~edge])  # the rest is the crop, untouched


def test_labelstudio_paint_on_the_yellow_line_is_the_region_edge(dataset: Dataset, tmp_path: Path) -> None:
    """A brush stroke over exactly the yellow pixels of the shown image reads back as the region's edge
    pixels; one pixel more, just outside the line, is refused."""
    from label_studio_sdk.converter.brush import mask2rle

    request = small_request(dataset)
    path = ls_export(dataset, tmp_path, lambda tasks: None)
    tasks = json.loads(path.read_text())
    line = (np.asarray(Image.open(tmp_path / "images" / f"{request.items[1].id}.png")) == YELLOW).all(axis=2)
    result = tasks[1]["annotations"][0]["result"][0]
    result["value"]["rle"] = mask2rle(line.astype(np.uint8) * 255)
    path.write_text(json.dumps(tasks))
    mask = labelstudio.read(path, request)[request.items[1].id]
    expected = np.zeros((32, 32), np.uint8)
    expected[[0, -1], :] = expected[:, [0, -1]] = 1
    assert np.array_equal(mask, expected)
    line[15, 20] = True  # the context row above the line
    result["value"]["rle"] = mask2rle(line.astype(np.uint8) * 255)
    path.write_text(json.dumps(tasks))
    with pytest.raises(FormatError, match=r"task 1 .*1 painted pixels outside the region \(e.g. x 20, y 15 "):
        labelstudio.read(path, request)


def ls_outside(tasks: list) -> None:
    from label_studio_sdk.converter.brush import mask2rle

    result = tasks[1]["annotations"][0]["result"][0]
    canvas = np.zeros((result["original_height"], result["original_width"]), np.uint8)
    canvas[0, 0] = 255
    result["value"]["rle"] = mask2rle(canvas)


@pytest.mark.parametrize("change, message", [
    (ls_outside, r"task 1 .*result 0: 1 painted pixels outside the region"),
    (lambda t: t[0]["annotations"][0]["result"][0]["value"].update(brushlabels=["cell"]),
     r"task 0 .*unknown class name 'cell'"),
    (lambda t: t[1]["annotations"][0].update(was_cancelled=True), r"regions missing \(1 of 2\)"),
    (lambda t: t[0]["data"].update(activeseg_round=1), r"task 0 .*round 1, not round 2: a different round's export"),
    (lambda t: t[0]["data"].update(region_id="../x"), r"task 0 .*'../x' is not a plain file name"),
    (lambda t: t[0]["annotations"][0]["result"][0].update(type="polygonlabels"), r"only brushlabels are read"),
])
def test_bad_labelstudio_exports_are_named(change, message: str, dataset: Dataset, tmp_path: Path) -> None:
    with pytest.raises(FormatError, match=message):
        labelstudio.read(ls_export(dataset, tmp_path, change), small_request(dataset))


def test_links_are_never_followed(dataset: Dataset, tmp_path: Path) -> None:
    (tmp_path / "real.json").write_text("[]")
    (tmp_path / "link.json").symlink_to(tmp_path / "real.json")
    with pytest.raises(FormatError, match="symbolic link"):
        labelstudio.read(tmp_path / "link.json", small_request(dataset))


# -- who annotated -------------------------------------------------------------------------------------

def test_each_tool_names_its_annotator(dataset: Dataset, tmp_path: Path) -> None:
    request = small_request(dataset)
    path = ls_export(dataset, tmp_path / "ls", lambda tasks: tasks[1]["annotations"][0].update(
        completed_by={"id": 4, "email": "b@lab.example"}))
    assert labelstudio.annotators(path) == ["b@lab.example", "label-studio user 7"]
    xml = cvat_xml(dataset, tmp_path / "cvat", lambda root: ET.SubElement(
        ET.SubElement(root.find("meta/task"), "owner"), "username").__setattr__("text", "owner1"))
    assert cvat.annotators(xml) == ["owner1"]
    assert cvat.annotators(export("cvat", dataset, request, tmp_path / "plain")) == []
    features = qupath_written(request, request.items[0])
    features[1]["properties"]["metadata"] = {"annotator": "dr-path"}
    (tmp_path / "q.geojson").write_text(json.dumps(features))
    assert qupath.annotators(tmp_path / "q.geojson") == ["dr-path"]
