"""CVAT for images 1.1 XML: one ``<image>`` per region crop, masks as CVAT RLE; and back.

Each region is sent as its crop with a context margin, ``<region id>.png`` (the same crop as the
object-store request); the region lies at :attr:`RequestItem.in_crop` inside it. Coordinates are CVAT's,
in crop pixels: a ``<mask>`` has ``left, top, width, height`` (its box) and ``rle``, the run lengths over
that box in row-major order, alternating background and mask and starting with background. The export
has one mask per predicted class, plus ``meta/task`` with the labels and the round in ``name``.

Reading decodes every ``<mask>`` (and rasterizes any ``<polygon>``, whose points are pixel-edge
coordinates ``x,y;x,y;...``) of each image into its region: later shapes over earlier ones, the rest
background. A mask or polygon reaching outside the region is refused.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
from defusedxml import DefusedXmlException
from defusedxml import ElementTree as safe_xml
from shapely.geometry import Polygon

from activeseg.workspace.exchange.formats.common import FormatError, Request, RequestItem, check_mask, region_of_name, user_name
from activeseg.workspace.exchange.formats.files import one_file, read_bytes
from activeseg.workspace.exchange.formats.geometry import rasterize

ANNOTATIONS = "annotations.xml"
IMAGES = "images"
SUFFIX = ".png"


def rle_encode(mask: np.ndarray) -> list[int]:
    """CVAT RLE of a boolean (h, w) array: run lengths, row-major, starting with a (maybe empty) false run."""
    flat = mask.ravel().astype(np.int8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds).tolist()
    return ([0] + runs) if flat.size and flat[0] else runs


def rle_decode(counts: list[int], height: int, width: int, where: str) -> np.ndarray:
    """The (height, width) boolean mask of CVAT RLE counts; counts that do not fill the box are refused."""
    if any(c < 0 for c in counts) or sum(counts) != height * width:
        raise FormatError(f"{where}: RLE counts sum to {sum(counts)}, the box has {height} x {width} = "
                          f"{height * width} pixels")
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape(height, width)


def _mask_element(label: str, mask: np.ndarray, dy: int, dx: int) -> ET.Element | None:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        return None
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    rle = rle_encode(mask[top:bottom, left:right])
    return ET.Element("mask", {"label": label, "source": "auto", "occluded": "0", "z_order": "0",
                               "rle": ", ".join(map(str, rle)), "left": str(left + dx), "top": str(top + dy),
                               "width": str(right - left), "height": str(bottom - top)})


def export(request: Request, predictions: Mapping[str, np.ndarray], out: Path,
           crop: Callable[[RequestItem], np.ndarray]) -> list[Path]:
    """Write ``annotations.xml`` and ``images/<region id>.png`` (``crop`` gives each region's crop, uint8)
    into ``out``; returns the files written."""
    from PIL import Image

    (out / IMAGES).mkdir(parents=True, exist_ok=True)
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    task = ET.SubElement(ET.SubElement(root, "meta"), "task")
    ET.SubElement(task, "name").text = f"activeseg round {request.round}"
    ET.SubElement(task, "size").text = str(len(request.items))
    labels = ET.SubElement(task, "labels")
    for name in request.class_names[1:]:
        label = ET.SubElement(labels, "label")
        ET.SubElement(label, "name").text = name
        ET.SubElement(label, "type").text = "mask"
    written = []
    for index, item in enumerate(request.items):
        pixels = crop(item)
        name = f"{item.id}{SUFFIX}"
        Image.fromarray(pixels).save(out / IMAGES / name)
        written.append(out / IMAGES / name)
        image = ET.SubElement(root, "image", {"id": str(index), "name": name, "width": str(pixels.shape[1]),
                                              "height": str(pixels.shape[0])})
        mask = check_mask(predictions[item.id], item, len(request.class_names))
        dy, dx = item.in_crop[:2]
        for class_id in range(1, len(request.class_names)):
            element = _mask_element(request.class_names[class_id], mask == class_id, dy, dx)
            if element is not None:
                image.append(element)
    ET.indent(root)
    ET.ElementTree(root).write(out / ANNOTATIONS, encoding="utf-8", xml_declaration=True)
    return [out / ANNOTATIONS, *written]


# -- reading -------------------------------------------------------------------------------------------

def _int(element: ET.Element, key: str, where: str) -> int:
    try:
        return int(float(element.attrib[key]))
    except KeyError:
        raise FormatError(f"{where}: attribute {key!r} missing") from None
    except ValueError:
        raise FormatError(f"{where}: attribute {key}={element.attrib[key]!r} is not a number") from None


def _shape(element: ET.Element, item: RequestItem, where: str) -> np.ndarray:
    """The pixels of the region that a <mask> or <polygon> covers, as an (h, w) boolean array."""
    ry0, rx0, ry1, rx1 = item.in_crop
    if element.tag == "mask":
        left, top = _int(element, "left", where), _int(element, "top", where)
        width, height = _int(element, "width", where), _int(element, "height", where)
        try:
            counts = [int(c) for c in element.attrib.get("rle", "").replace(" ", "").split(",") if c]
        except ValueError:
            raise FormatError(f"{where}: rle is not a list of integers") from None
        if left < 0 or top < 0 or width < 0 or height < 0:
            raise FormatError(f"{where}: mask box outside the image (left {left}, top {top}, width {width}, "
                              f"height {height})")
        box = rle_decode(counts, height, width, where)
        full = np.zeros((max(ry1, top + height), max(rx1, left + width)), dtype=bool)
        full[top:top + height, left:left + width] = box
        outside = full.copy()
        outside[ry0:ry1, rx0:rx1] = False
        if outside.any():
            raise FormatError(f"{where}: mask reaches outside the region (box left {left}, top {top}, width {width}, "
                              f"height {height}; the region is x {rx0}..{rx1}, y {ry0}..{ry1} of the crop)")
        return full[ry0:ry1, rx0:rx1]
    try:
        points = np.array([[float(v) for v in p.split(",")] for p in element.attrib["points"].split(";")])
    except (KeyError, ValueError):
        raise FormatError(f"{where}: polygon points are not 'x,y;x,y;...'") from None
    if points.ndim != 2 or points.shape[1] != 2 or len(points) < 3:
        raise FormatError(f"{where}: a polygon needs at least 3 points")
    polygon = Polygon(points)
    xmin, ymin, xmax, ymax = polygon.bounds
    if xmin < rx0 - 1 or ymin < ry0 - 1 or xmax > rx1 + 1 or ymax > ry1 + 1:
        raise FormatError(f"{where}: polygon reaches outside the region (x {xmin:g}..{xmax:g}, y {ymin:g}..{ymax:g}; "
                          f"the region is x {rx0}..{rx1}, y {ry0}..{ry1} of the crop)")
    return rasterize([polygon], item.in_crop)


def _root(path: Path) -> tuple[Path, ET.Element]:
    """The XML file (``path``, or the ``annotations.xml`` in a folder) and its parsed root, safely."""
    file = one_file(path, ANNOTATIONS, (".xml",))
    try:
        return file, safe_xml.fromstring(read_bytes(file))
    except ET.ParseError as exc:
        raise FormatError(f"{file}: malformed XML: {exc}") from None
    except DefusedXmlException as exc:
        raise FormatError(f"{file}: XML refused ({exc!r}): entities and DTDs are not read") from None


def annotators(path: Path) -> list[str]:
    """Who CVAT names in ``<meta>`` (task, job or project): the assignee (the annotator), else the owner,
    by ``<username>`` (else ``<email>``)."""
    root = _root(path)[1]
    for role in ("assignee", "owner"):
        names = {user_name({k: e.findtext(k) for k in ("username", "email")}, "cvat")
                 for e in root.iterfind(f"meta//{role}")}
        if names - {None}:
            return sorted(names - {None})
    return []


def read(path: Path, request: Request) -> dict[str, np.ndarray]:
    """One (h, w) uint8 class-id mask per requested region from a CVAT for images 1.1 XML file (or the
    ``annotations.xml`` in a folder); a :class:`FormatError` names the image and shape of any problem."""
    file, root = _root(path)
    if root.tag != "annotations":
        raise FormatError(f"{file}: not CVAT for images XML (root <{root.tag}>, expected <annotations>)")
    task_name = root.findtext("meta/task/name") or root.findtext("meta/job/name") or ""
    if task_name.startswith("activeseg round ") and task_name != f"activeseg round {request.round}":
        raise FormatError(f"{file}: task {task_name!r} is a different round's export, not round {request.round}")
    masks: dict[str, np.ndarray] = {}
    for index, image in enumerate(root.iter("image")):
        where = f"{file}: image {index} {image.get('name')!r}"
        item = region_of_name(image.get("name"), SUFFIX, request, where)
        if item.id in masks:
            raise FormatError(f"{where}: region {item.id} appears twice")
        mask = np.zeros(item.shape, dtype=np.uint8)
        for k, element in enumerate(image):
            what = f"{where}, <{element.tag}> {k}"
            if element.tag not in ("mask", "polygon"):
                raise FormatError(f"{what}: only <mask> and <polygon> are read (draw masks or polygons)")
            class_id = request.class_id(element.get("label"), what)
            mask[_shape(element, item, what)] = class_id
        masks[item.id] = mask
    request.check_complete(set(masks), str(file))
    return masks
