"""QuPath GeoJSON: export a round's request with the model's prediction, read QuPath's export back.

Coordinates are QuPath's: ``x, y`` in full-resolution pixels of the whole image, origin at the top-left
corner (see :mod:`.geometry`); for a whole-slide image cut at a pyramid level, level-0 pixels (region
coordinates times the level's downsample, ``Request.downsample``), and read back divided by it. One FeatureCollection per image, ``<stem>.geojson``:

- each requested region: a locked rectangle annotation over its in-image part, classification
  ``activeseg request``, ``name`` the region id (also in ``metadata``: QuPath measurements are numbers
  only) and ``measurements`` ``activeseg score``, ``activeseg rank`` and ``activeseg round``;
- each predicted object inside a region: an unlocked Polygon annotation (holes kept) with the class name.

Reading takes a file or a folder of ``.geojson``/``.json`` files, each a FeatureCollection, a Feature or a
list of features (``objectType``, ``classification``, ``isLocked``, Polygon or MultiPolygon with holes, as
QuPath writes them). Each class shape of a file is clipped to the rectangle of every requested region of
its image it overlaps (shapely's intersection: a nucleus outlined whole across a region's edge labels the
region's part of it, and each of two regions it spans) and rasterized there (pixel centres inside, later
shapes over earlier ones); everything else in a region is background. :func:`read_labels` also names, per
region, the shapes cut at its rectangle (reaching more than :data:`TOLERANCE` past it). A shape that
overlaps no region's rectangle is refused, every such shape named in one error.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any

import numpy as np
from shapely import STRtree, get_parts, make_valid
from shapely.affinity import scale
from shapely.geometry import MultiPolygon, Polygon, box, mapping
from shapely.geometry.base import BaseGeometry

from activeseg.workspace.exchange.formats.common import (REQUEST_CLASS, USER_KEYS, FormatError, Labels, Request, RequestItem,
                                                check_mask, user_name)
from activeseg.workspace.exchange.formats.files import files_in, read_json, write_json
from activeseg.workspace.exchange.formats.geometry import mask_polygons, rasterize

SUFFIXES = (".geojson", ".json")
TOLERANCE = 1.0
"""How far (region pixels) a shape may reach past a region's box before it is recorded as clipped there
(what lies beyond the box is never labeled)."""
REQUEST_COLOR = [255, 255, 0]
ROUND, SCORE, RANK = "activeseg round", "activeseg score", "activeseg rank"


def _feature(fid: str, polygon: Polygon, props: dict[str, Any], factor: float = 1.0) -> dict[str, Any]:
    """A GeoJSON feature of ``polygon`` (region pixels) scaled by ``factor`` into QuPath's coordinates."""
    geometry = mapping(scale(polygon, factor, factor, origin=(0, 0)) if factor != 1 else polygon)
    return {"type": "Feature", "id": fid, "geometry": geometry, "properties": props}


def _color(class_id: int) -> list[int]:
    palette = [[200, 0, 0], [0, 150, 0], [0, 0, 200], [200, 0, 200], [0, 150, 150], [150, 150, 0]]
    return palette[(class_id - 1) % len(palette)]


def region_features(request: Request, item: RequestItem, prediction: np.ndarray) -> list[dict[str, Any]]:
    """The request rectangle of one region, then its predicted objects (one feature per polygon)."""
    y0, x0, y1, x1 = item.box
    rect = Polygon([(x0, y0), (x1, y0), (x1, y1), (x0, y1)])
    measurements = {ROUND: request.round, RANK: item.rank}
    if item.score is not None:
        measurements[SCORE] = item.score
    ns = f"activeseg/{request.round}/{item.id}"
    factor = request.downsample.get(item.stem, 1.0)
    features = [_feature(str(uuid.uuid5(uuid.NAMESPACE_URL, ns)), rect, {
        "objectType": "annotation", "name": item.id, "isLocked": True,
        "classification": {"name": REQUEST_CLASS, "color": REQUEST_COLOR},
        "metadata": {"activeseg_region_id": item.id, "activeseg_round": str(request.round)},
        "measurements": measurements}, factor)]
    mask = check_mask(prediction, item, len(request.class_names))
    for class_id in range(1, len(request.class_names)):
        for k, polygon in enumerate(mask_polygons(mask == class_id, x0, y0)):
            features.append(_feature(str(uuid.uuid5(uuid.NAMESPACE_URL, f"{ns}/{class_id}/{k}")), polygon, {
                "objectType": "annotation", "isLocked": False,
                "classification": {"name": request.class_names[class_id], "color": _color(class_id)},
                "metadata": {"activeseg_region_id": item.id, "activeseg_source": "prediction"}}, factor))
    return features


def export(request: Request, predictions: Mapping[str, np.ndarray], out: Path,
           image: Callable[[str], np.ndarray | None] | None = None) -> list[Path]:
    """Write ``<stem>.geojson`` per image of the request (and ``<stem>.png``, the full image, when
    ``image`` gives it: never a whole-slide image) into ``out``; ``predictions`` maps region id -> (h, w) class ids of the region's
    in-image part. Returns the files written."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    stems: dict[str, list[RequestItem]] = {}
    for item in request.items:
        stems.setdefault(item.stem, []).append(item)
    written = []
    for stem, items in stems.items():
        features = [f for item in items for f in region_features(request, item, predictions[item.id])]
        written.append(write_json(out / f"{stem}.geojson", {"type": "FeatureCollection", "features": features}))
        pixels = image(stem) if image is not None else None
        if pixels is not None:
            Image.fromarray(pixels).save(out / f"{stem}.png")
            written.append(out / f"{stem}.png")
    return written


# -- reading -------------------------------------------------------------------------------------------

def _features(data: Any, where: str) -> list[Any]:
    if isinstance(data, list):
        return data
    if isinstance(data, dict) and data.get("type") == "FeatureCollection" and isinstance(data.get("features"), list):
        return data["features"]
    if isinstance(data, dict) and data.get("type") == "Feature":
        return [data]
    raise FormatError(f"{where}: not GeoJSON as QuPath writes it (a FeatureCollection, a Feature or a list of "
                      "features)")


def _class_name(props: dict[str, Any]) -> str | None:
    cls = props.get("classification")
    if isinstance(cls, dict):
        names = cls.get("names")
        if isinstance(names, list) and names:
            return ": ".join(str(n) for n in names)
        return cls.get("name")
    return cls if isinstance(cls, str) else None


def _measurement(props: dict[str, Any], name: str) -> Any:
    """A measurement by name, from QuPath's map (0.4+) or list of {name, value} (0.2-0.3)."""
    found = props.get("measurements")
    if isinstance(found, dict):
        return found.get(name)
    if isinstance(found, list):
        return next((m.get("value") for m in found if isinstance(m, dict) and m.get("name") == name), None)
    return None


def _ring(ring: Any, where: str) -> np.ndarray:
    try:
        array = np.asarray(ring, dtype=float)
    except (TypeError, ValueError):
        raise FormatError(f"{where}: coordinates are not numbers") from None
    if array.ndim != 2 or array.shape[1] < 2 or len(array) < 4 or not np.isfinite(array).all():
        raise FormatError(f"{where}: a ring needs at least 4 finite [x, y] points")
    return array[:, :2]


def _polygons(geometry: Any, where: str) -> list[Polygon]:
    """The polygons (exterior ring, then holes) of a Polygon or MultiPolygon geometry."""
    kind = geometry.get("type") if isinstance(geometry, dict) else None
    coords = geometry.get("coordinates") if isinstance(geometry, dict) else None
    if kind not in ("Polygon", "MultiPolygon"):
        raise FormatError(f"{where}: geometry {kind!r} is not an area (Polygon or MultiPolygon expected)")
    if not isinstance(coords, list) or not coords:
        raise FormatError(f"{where}: {kind} without coordinates")
    parts = [coords] if kind == "Polygon" else coords
    polygons = []
    for part in parts:
        if not isinstance(part, list) or not part:
            raise FormatError(f"{where}: an empty polygon")
        rings = [_ring(r, where) for r in part]
        polygons.append(Polygon(rings[0], rings[1:]))
    return polygons


def _describe(index: int, fid: Any, props: dict[str, Any]) -> str:
    name = props.get("name")
    return f"feature {index}" + (f" {name!r}" if name else "") + (f" (id {fid})" if fid else "")


@dataclass(frozen=True)
class Shape:
    """One class feature of a file: ``label`` names it (``feature 4 'name' (id ...)``) and ``area`` is
    its valid (Multi)Polygon in QuPath's coordinates."""

    file: Path
    label: str
    class_id: int
    area: BaseGeometry

    @property
    def where(self) -> str:
        return f"{self.file}: {self.label}"


def read_file(path: Path, request: Request) -> tuple[list[RequestItem], list[Shape]]:
    """The request rectangles found in one file and its class shapes."""
    regions: list[RequestItem] = []
    shapes: list[Shape] = []
    for index, feature in enumerate(_features(read_json(path), str(path)), start=1):  # counted from 1, as people do
        if not isinstance(feature, dict):
            raise FormatError(f"{path}: feature {index} is not an object")
        props = feature.get("properties") or {}
        if not isinstance(props, dict):
            raise FormatError(f"{path}: feature {index}: properties is not an object")
        label = _describe(index, feature.get("id"), props)
        where = f"{path}: {label}"
        name = _class_name(props)
        if name == REQUEST_CLASS:
            meta = props.get("metadata") if isinstance(props.get("metadata"), dict) else {}
            item = request.item(meta.get("activeseg_region_id", props.get("name")), where)
            found = _measurement(props, ROUND)
            if found is not None and found != request.round:
                raise FormatError(f"{where}: exported for round {found}, not round {request.round}: a different "
                                  "round's export")
            regions.append(item)
        elif name is None:
            raise FormatError(f"{where}: has no classification; set one of "
                              f"{', '.join(repr(n) for n in request.class_names)}")
        else:
            area = make_valid(MultiPolygon(_polygons(feature.get("geometry"), where)), method="structure",
                              keep_collapsed=False)
            shapes.append(Shape(path, label, request.class_id(name, where), area))
    return regions, shapes


def annotators(path: Path) -> list[str]:
    """Who the class shapes name, where QuPath (or a script) put it: an ``annotator``, ``author`` or
    ``user`` in a feature's ``metadata`` or ``properties``. QuPath itself writes no user: usually none."""
    names = set()
    for file in files_in(path, SUFFIXES):
        for feature in _features(read_json(file), str(file)):
            props = feature.get("properties") if isinstance(feature, dict) else None
            if not isinstance(props, dict) or _class_name(props) == REQUEST_CLASS:
                continue
            meta = props.get("metadata") if isinstance(props.get("metadata"), dict) else {}
            found = next((v for d in (meta, props) for k in USER_KEYS if (v := user_name(d.get(k), "qupath"))), None)
            if found:
                names.add(found)
    return sorted(names)


def _rectangle(item: RequestItem, grow: float = 0.0) -> Polygon:
    """The region's in-image part in region pixels (``x, y``), grown by ``grow`` on every side."""
    y0, x0, y1, x1 = item.box
    return box(x0 - grow, y0 - grow, x1 + grow, y1 + grow)


def _paint(shape: Shape, area: BaseGeometry, candidates: list[RequestItem], labels: Labels) -> bool:
    """Paint ``area`` (the shape in region pixels) into each candidate region it overlaps, clipped to the
    region's rectangle, and record it as clipped where it reaches more than :data:`TOLERANCE` past a
    rectangle it paints; False when it overlaps no candidate (by a positive area)."""
    overlaps = False
    for item in candidates:  # overlapping regions: a shape labels each one it covers
        inside = area.intersection(_rectangle(item))
        if inside.area == 0:
            continue
        overlaps = True
        painted = rasterize([p for p in get_parts(inside) if isinstance(p, Polygon)], item.box)
        if not painted.any():
            continue
        if item.id not in labels.masks:
            raise FormatError(f"{shape.where}: inside region {item.id}, whose request rectangle is missing")
        labels.masks[item.id][painted] = shape.class_id
        if not _rectangle(item, TOLERANCE).covers(area):
            labels.clipped.setdefault(item.id, []).append(f"{shape.file.name}: {shape.label}")
    return overlaps


def _outside(shapes: list[Shape]) -> FormatError:
    """The error naming every shape that overlaps no requested region, with its extent in QuPath's
    coordinates."""

    def extent(shape: Shape) -> str:
        xmin, ymin, xmax, ymax = shape.area.bounds
        return f"{shape.label} at x {xmin:g}..{xmax:g}, y {ymin:g}..{ymax:g}"

    named = [f"{file}: " + "; ".join(map(extent, found)) for file, found in groupby(shapes, key=lambda s: s.file)]
    return FormatError(f"shapes outside the requested regions ({len(shapes)}; a shape must overlap a region's "
                       "rectangle, what lies past it is clipped): " + "; ".join(named))


def _stem(file: Path, regions: list[RequestItem], shapes: list[Shape], request: Request) -> str:
    """The image a file is on: its request rectangles', else its file name's."""
    images = {item.stem for item in regions}
    if len(images) > 1:
        raise FormatError(f"{file}: request rectangles of several images ({', '.join(sorted(images))}); "
                          "QuPath writes one file per image")
    stem = images.pop() if images else file.name.rsplit(".", 1)[0]
    if shapes and stem not in {item.stem for item in request.items}:
        raise FormatError(f"{file}: shapes but no activeseg request rectangle, and {stem!r} is not a requested "
                          "image: cannot tell which image they are on")
    return stem


def read_labels(path: Path, request: Request) -> Labels:
    """The masks of QuPath's GeoJSON at ``path`` (a file or a folder) and the shapes clipped to each
    region (named ``<file name>: feature k 'name' (id ...)``, in file order); a :class:`FormatError`
    names the file and feature of any problem (every shape outside the regions at once)."""
    labels = Labels({})
    outside: list[Shape] = []
    for file in files_in(path, SUFFIXES):
        regions, shapes = read_file(file, request)
        stem = _stem(file, regions, shapes, request)
        for item in regions:
            if item.id in labels.masks:
                raise FormatError(f"{file}: region {item.id} appears twice")
            labels.masks[item.id] = np.zeros(item.shape, dtype=np.uint8)
        candidates = [item for item in request.items if item.stem == stem]
        rectangles = STRtree([_rectangle(item) for item in candidates])
        factor = request.downsample.get(stem, 1.0)
        for shape in shapes:
            area = scale(shape.area, 1 / factor, 1 / factor, origin=(0, 0)) if factor != 1 else shape.area
            near = [candidates[k] for k in sorted(rectangles.query(area))]  # bounding boxes meet, request order
            if not _paint(shape, area, near, labels):
                outside.append(shape)
    if outside:
        raise _outside(outside)
    request.check_complete(set(labels.masks), str(path))
    return labels


def read(path: Path, request: Request) -> dict[str, np.ndarray]:
    """One (h, w) uint8 class-id mask per requested region from QuPath's GeoJSON at ``path`` (a file or
    a folder), shapes clipped to the regions (:func:`read_labels`)."""
    return read_labels(path, request).masks
