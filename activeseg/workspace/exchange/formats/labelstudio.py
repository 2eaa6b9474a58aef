"""Label Studio: labeling config, tasks with the model's prediction as pre-annotation, and reading
Label Studio's JSON export back.

One task per region: ``data.image`` the region's crop with a context margin and the region outlined in
yellow on its edge pixels (:func:`shown`; a store URL or a local path, by ``image_url``), ``data.region_id``,
``data.activeseg_round``, ``data.region_in_crop`` ``[y0, x0, y1, x1]`` (crop pixels) and ``data.score``.
The labeling config's header says what the image shows: paint inside the yellow box, its line included;
the rest is context. One prediction whose ``score`` is the region's
uncertainty (the Data Manager sorts by it) and whose result is one ``brushlabels`` item per predicted class,
in Label Studio's RLE over the whole crop (RGBA, row-major), encoded and decoded with
``label_studio_sdk.converter.brush``. Reading takes each task's latest annotation that was not cancelled;
painted pixels outside the region are refused.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from activeseg.workspace.exchange.images import outlined
from activeseg.workspace.exchange.formats.common import FormatError, Request, RequestItem, check_mask, check_name, user_name
from activeseg.workspace.exchange.formats.files import one_file, read_json, write_json

CONFIG, TASKS, IMAGES = "labeling_config.xml", "tasks.json", "images"
FROM_NAME, TO_NAME = "label", "image"
COLORS = ["#c80000", "#009600", "#0000c8", "#c800c8", "#009696", "#969600"]
HEADER = ("Region $region_id: paint only inside the yellow box, its yellow line included (the line covers the "
          "region's edge pixels). Around the box is context to look at: paint there is refused.")
"""What the annotator reads above the image (``$region_id`` is the task's); it describes :func:`shown`."""


def shown(crop: np.ndarray, item: RequestItem) -> np.ndarray:
    """The (H, W, 3) uint8 image a task shows: the region's (H, W) or (H, W, 3) uint8 crop with the region
    outlined in yellow on its edge pixels (:func:`activeseg.workspace.exchange.images.outlined`, as on the
    request's previews). Same size as the crop, so brush strokes keep the crop's pixel grid."""
    return outlined(crop, item.in_crop)


def labeling_config(class_names: tuple[str, ...]) -> str:
    """BrushLabels over the class names (background is what is left unpainted) below :data:`HEADER`."""
    view = ET.Element("View")
    ET.SubElement(view, "Header", {"value": HEADER})
    ET.SubElement(view, "Image", {"name": TO_NAME, "value": "$image", "zoom": "true"})
    brush = ET.SubElement(view, "BrushLabels", {"name": FROM_NAME, "toName": TO_NAME})
    for k, name in enumerate(class_names[1:]):
        ET.SubElement(brush, "Label", {"value": name, "background": COLORS[k % len(COLORS)]})
    ET.indent(view)
    return ET.tostring(view, encoding="unicode") + "\n"


def _result(rid: str, name: str, mask: np.ndarray) -> dict[str, Any]:
    from label_studio_sdk.converter.brush import mask2rle

    return {"id": rid, "type": "brushlabels", "from_name": FROM_NAME, "to_name": TO_NAME, "origin": "prediction",
            "original_width": int(mask.shape[1]), "original_height": int(mask.shape[0]), "image_rotation": 0,
            "value": {"format": "rle", "rle": mask2rle(mask.astype(np.uint8) * 255), "brushlabels": [name]}}


def task(request: Request, item: RequestItem, prediction: np.ndarray, crop_shape: tuple[int, int],
         url: str) -> dict[str, Any]:
    """One region's task with its prediction (painted into a crop-sized canvas)."""
    mask = check_mask(prediction, item, len(request.class_names))
    y0, x0, y1, x1 = item.in_crop
    results = []
    for class_id in range(1, len(request.class_names)):
        canvas = np.zeros(crop_shape, dtype=bool)
        canvas[y0:y1, x0:x1] = mask == class_id
        if canvas.any():
            results.append(_result(f"{item.rank}-{class_id}", request.class_names[class_id], canvas))
    prediction_entry: dict[str, Any] = {"model_version": f"activeseg round {request.round}", "result": results}
    if item.score is not None:
        prediction_entry["score"] = item.score
    return {"data": {"image": url, "region_id": item.id, "activeseg_round": request.round,
                     "region_in_crop": list(item.in_crop), "score": item.score, "rank": item.rank},
            "predictions": [prediction_entry]}


def export(request: Request, predictions: Mapping[str, np.ndarray], out: Path,
           crop: Callable[[RequestItem], np.ndarray],
           image_url: Callable[[RequestItem], str] | None = None) -> list[Path]:
    """Write ``labeling_config.xml``, ``tasks.json`` and ``images/<region id>.png`` (:func:`shown` of
    ``crop(item)``) into ``out``. ``image_url`` gives a task's image reference (default: Label Studio local
    files, ``/data/local-files/?d=images/<region id>.png`` with ``out`` as the document root)."""
    from PIL import Image

    (out / IMAGES).mkdir(parents=True, exist_ok=True)
    (out / CONFIG).write_text(labeling_config(request.class_names))
    url = image_url or (lambda item: f"/data/local-files/?d={IMAGES}/{item.id}.png")
    tasks, written = [], [out / CONFIG]
    for item in request.items:
        pixels = shown(crop(item), item)
        Image.fromarray(pixels).save(out / IMAGES / f"{item.id}.png")
        written.append(out / IMAGES / f"{item.id}.png")
        tasks.append(task(request, item, predictions[item.id], pixels.shape[:2], url(item)))
    return [write_json(out / TASKS, tasks), *written]


# -- reading -------------------------------------------------------------------------------------------

def _latest(annotations: Any, where: str) -> dict[str, Any] | None:
    if not isinstance(annotations, list):
        raise FormatError(f"{where}: 'annotations' is not a list")
    done = [a for a in annotations if isinstance(a, dict) and not a.get("was_cancelled")]
    return max(done, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), a.get("id") or 0),
               default=None)


def _brush(result: Any, item: RequestItem, request: Request, where: str) -> tuple[int, np.ndarray]:
    """(class id, region-sized boolean mask) of one brushlabels result."""
    from label_studio_sdk.converter.brush import decode_rle

    if not isinstance(result, dict) or result.get("type") != "brushlabels":
        kind = result.get("type") if isinstance(result, dict) else type(result).__name__
        raise FormatError(f"{where}: result type {kind!r}; only brushlabels are read (paint with the brush)")
    value = result.get("value") or {}
    names = value.get("brushlabels") if isinstance(value, dict) else None
    if not isinstance(names, list) or len(names) != 1:
        raise FormatError(f"{where}: a brush result needs exactly one label, got {names!r}")
    class_id = request.class_id(names[0], where)
    height, width = item.crop_box[2] - item.crop_box[0], item.crop_box[3] - item.crop_box[1]
    if (result.get("original_height"), result.get("original_width")) != (height, width):
        raise FormatError(f"{where}: drawn on an image of {result.get('original_height')} x "
                          f"{result.get('original_width')} (height x width), the region's crop is {height} x {width}")
    rle = value.get("rle")
    try:
        flat = decode_rle(rle) if isinstance(rle, list) and rle else None
    except Exception as exc:  # the SDK raises anything on bad bits
        raise FormatError(f"{where}: RLE cannot be decoded ({type(exc).__name__}: {exc})") from None
    if flat is None or flat.size != height * width * 4:
        raise FormatError(f"{where}: RLE does not hold {height} x {width} (height x width) RGBA pixels")
    painted = flat.reshape(height, width, 4)[:, :, 3] > 127
    y0, x0, y1, x1 = item.in_crop
    inside = painted[y0:y1, x0:x1].copy()
    painted[y0:y1, x0:x1] = False
    if painted.any():
        ys, xs = np.nonzero(painted)
        raise FormatError(f"{where}: {len(ys)} painted pixels outside the region (e.g. x {xs[0]}, y {ys[0]} of the "
                          f"crop; the region is x {x0}..{x1}, y {y0}..{y1})")
    return class_id, inside


def _tasks(path: Path) -> tuple[Path, list[Any]]:
    """The export file and its tasks."""
    file = one_file(path, TASKS, (".json",))
    tasks = read_json(file)
    if isinstance(tasks, dict):
        tasks = [tasks]
    if not isinstance(tasks, list):
        raise FormatError(f"{file}: not a Label Studio JSON export (a list of tasks)")
    return file, tasks


def annotators(path: Path) -> list[str]:
    """Who completed the annotations that :func:`read` takes (each task's latest one not cancelled):
    ``completed_by``, a user id (``label-studio user 7``) or a user object (its email, else username)."""
    names = set()
    for index, entry in enumerate(_tasks(path)[1]):
        found = _latest(entry.get("annotations", []), f"task {index}") if isinstance(entry, dict) else None
        name = user_name(found.get("completed_by"), "label-studio") if found else None
        if name:
            names.add(name)
    return sorted(names)


def read(path: Path, request: Request) -> dict[str, np.ndarray]:
    """One (h, w) uint8 class-id mask per requested region from Label Studio's JSON export (a file, or
    the only ``.json`` file in a folder); a :class:`FormatError` names the task and result of any problem."""
    file, tasks = _tasks(path)
    masks: dict[str, np.ndarray] = {}
    for index, entry in enumerate(tasks):
        data = entry.get("data") if isinstance(entry, dict) else None
        if not isinstance(data, dict):
            raise FormatError(f"{file}: task {index} has no 'data'")
        where = f"{file}: task {index} (id {entry.get('id')}, region {data.get('region_id')!r})"
        if data.get("activeseg_round") not in (None, request.round):
            raise FormatError(f"{where}: exported for round {data['activeseg_round']}, not round {request.round}: a "
                              "different round's export")
        item = request.item(check_name(data.get("region_id"), where), where)
        if item.id in masks:
            raise FormatError(f"{where}: region {item.id} appears twice")
        annotation = _latest(entry.get("annotations", []), where)
        if annotation is None:
            continue
        results = annotation.get("result")
        if not isinstance(results, list):
            raise FormatError(f"{where}: annotation {annotation.get('id')} has no 'result' list")
        mask = np.zeros(item.shape, dtype=np.uint8)
        for k, result in enumerate(results):
            class_id, painted = _brush(result, item, request, f"{where}, annotation {annotation.get('id')} result {k}")
            mask[painted] = class_id
        masks[item.id] = mask
    request.check_complete(set(masks), f"{file} (tasks without a completed annotation count as missing)")
    return masks
