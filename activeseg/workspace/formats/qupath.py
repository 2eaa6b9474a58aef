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
QuPath writes them). The class shapes of a file are rasterized into the requested regions of its image
(pixel centres inside, later shapes over earlier ones; where regions overlap, a shape labels each region
it covers); everything else in a region is background. A shape must lie inside one region's box (give or
take :data:`TOLERANCE`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from shapely.affinity import scale
from shapely.geometry import Polygon, mapping

from activeseg.workspace.formats.common import (REQUEST_CLASS, USER_KEYS, FormatError, Request, RequestItem, check_mask,
                                                user_name)
from activeseg.workspace.formats.files import files_in, read_json, write_json
from activeseg.workspace.formats.geometry import mask_polygons, rasterize

SUFFIXES = (".geojson", ".json")
TOLERANCE = 1.0
"""How far (pixels) a shape may reach past its region's box; what lies beyond the box is not labeled."""
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


def read_file(path: Path, request: Request) -> tuple[list[RequestItem], list[tuple[str, int, list[Polygon]]]]:
    """The request rectangles found in one file and its class shapes as (description, class id, polygons)."""
    regions: list[RequestItem] = []
    shapes: list[tuple[str, int, list[Polygon]]] = []
    for index, feature in enumerate(_features(read_json(path), str(path))):
        if not isinstance(feature, dict):
            raise FormatError(f"{path}: feature {index} is not an object")
        props = feature.get("properties") or {}
        if not isinstance(props, dict):
            raise FormatError(f"{path}: feature {index}: properties is not an object")
        where = f"{path}: {_describe(index, feature.get('id'), props)}"
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
            shapes.append((where, request.class_id(name, where), _polygons(feature.get("geometry"), where)))
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


def _inside(polygons: list[Polygon], item: RequestItem) -> bool:
    y0, x0, y1, x1 = item.box
    for polygon in polygons:
        xmin, ymin, xmax, ymax = polygon.bounds
        if xmin < x0 - TOLERANCE or ymin < y0 - TOLERANCE or xmax > x1 + TOLERANCE or ymax > y1 + TOLERANCE:
            return False
    return True


def read(path: Path, request: Request) -> dict[str, np.ndarray]:
    """One (h, w) uint8 class-id mask per requested region from QuPath's GeoJSON at ``path`` (a file or
    a folder); a :class:`FormatError` names the file and feature of any problem."""
    masks: dict[str, np.ndarray] = {}
    stems = {item.stem for item in request.items}
    for file in files_in(path, SUFFIXES):
        regions, shapes = read_file(file, request)
        images = {item.stem for item in regions}
        if len(images) > 1:
            raise FormatError(f"{file}: request rectangles of several images ({', '.join(sorted(images))}); "
                              "QuPath writes one file per image")
        stem = images.pop() if images else file.name.rsplit(".", 1)[0]
        if shapes and stem not in stems:
            raise FormatError(f"{file}: shapes but no activeseg request rectangle, and {stem!r} is not a requested "
                              "image: cannot tell which image they are on")
        for item in regions:
            if item.id in masks:
                raise FormatError(f"{file}: region {item.id} appears twice")
            masks[item.id] = np.zeros(item.shape, dtype=np.uint8)
        candidates = [item for item in request.items if item.stem == stem]
        factor = request.downsample.get(stem, 1.0)
        for where, class_id, polygons in shapes:
            polygons = [scale(p, 1 / factor, 1 / factor, origin=(0, 0)) for p in polygons] if factor != 1 else polygons
            if not any(_inside(polygons, item) for item in candidates):
                xmin, ymin, xmax, ymax = np.array([p.bounds for p in polygons]).T
                raise FormatError(f"{where}: shape outside the requested regions of {stem} (x {xmin.min():g}.."
                                  f"{xmax.max():g}, y {ymin.min():g}..{ymax.max():g}); draw inside a region's "
                                  "rectangle")
            for item in candidates:  # overlapping regions: a shape labels each one it covers
                painted = rasterize(polygons, item.box)
                if painted.any():
                    if item.id not in masks:
                        raise FormatError(f"{where}: inside region {item.id}, whose request rectangle is missing")
                    masks[item.id][painted] = class_id
    request.check_complete(set(masks), str(path))
    return masks
