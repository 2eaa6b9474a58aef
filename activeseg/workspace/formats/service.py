"""The formats in a workspace: a round's request and model prediction out, a tool's export in through
the existing submit path (validation, quarantine, ledger).

The request is the round's requested regions (:meth:`RoundRecord.requested`) in request order (rank 1
first), each with its in-image box and the crop (context margin) of the object-store request. The
prediction is the round's trained model (``record.trained``: the checkpoint must still be the one
trained in that round) applied to each region's whole image.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from activeseg.core.data import Dataset
from activeseg.core.partition import Region
from activeseg.core.util import sha256_file
from activeseg.workspace.base import WorkspaceCore
from activeseg.workspace.errors import WorkspaceError
from activeseg.workspace.exchange import context_box, mask_png, to_uint8
from activeseg.workspace.formats import cvat, labelstudio, qupath
from activeseg.workspace.formats.common import Request, RequestItem, default_class_names
from activeseg.workspace.intake import submit
from activeseg.workspace.records import LabelsAccepted, Staged

FORMATS = ("qupath", "cvat", "labelstudio")
Prediction = Callable[[RequestItem], np.ndarray]


def make_request(dataset: Dataset, round_number: int, regions: list[tuple[Region, float | None]],
                 class_names: tuple[str, ...], elsewhere: dict[str, int] | None = None) -> Request:
    """A request of ``regions`` (with their scores, in request order) on ``dataset``."""
    items = []
    for rank, (region, score) in enumerate(regions, start=1):
        sample = dataset.samples[region.stem]
        ys, xs = region.clipped(sample.height, sample.width)
        items.append(RequestItem(region.id, region.stem, (ys.start, xs.start, ys.stop, xs.stop),
                                 context_box(region, sample.height, sample.width), score, rank))
    return Request(round_number, class_names, tuple(items), elsewhere or {})


def build_request(ws: WorkspaceCore, round_number: int) -> Request:
    """The round's request as the formats see it (the ids of other rounds' requests kept to name a
    different round's export)."""
    record = ws.record(round_number)
    if record.queried is None and record.initial is None:
        raise WorkspaceError(f"round {round_number}: no label request was published yet")
    elsewhere = {ref.id: other.round for other in ws.records.all() if other.round != round_number
                 and (other.queried or other.initial) for ref in other.requested()}
    return make_request(ws.dataset, round_number, [(ref.region(), ref.score) for ref in record.requested()],
                        default_class_names(ws.cfg.data.classes), elsewhere)


def model_prediction(ws: WorkspaceCore, round_number: int) -> Prediction:
    """The round's model applied to each region's image (one forward pass per image, cached)."""
    from activeseg.model.inference import predict_mask
    from activeseg.model.network import load_checkpoint, pick_device

    trained = ws.record(round_number).trained
    if trained is None:
        raise WorkspaceError(f"round {round_number}: no trained model to predict with (`activeseg step train`)")
    checkpoint = ws.root / trained.checkpoint
    if not checkpoint.is_file() or sha256_file(checkpoint) != trained.checkpoint_sha256:
        raise WorkspaceError(f"{checkpoint}: not the model trained in round {round_number} (a later round replaced "
                             f"it); check out the tag of round {round_number} to export its request")
    device = pick_device(ws.cfg.train.device, ws.cfg.train.threads)
    model, _ = load_checkpoint(checkpoint, device)
    cache: dict[str, np.ndarray] = {}

    def predict(item: RequestItem) -> np.ndarray:
        if item.stem not in cache:
            cache[item.stem] = predict_mask(model, ws.dataset.image(item.stem), device)
        y0, x0, y1, x1 = item.box
        return cache[item.stem][y0:y1, x0:x1]

    return predict


def export_round(ws: WorkspaceCore, round_number: int, fmt: str, out: Path, prediction: Prediction | None = None,
                 image_url: Callable[[RequestItem], str] | None = None) -> dict[str, Any]:
    """Write the round's request in ``fmt`` into ``out`` with ``prediction`` (default: the round's model)
    as pre-annotation; returns a summary (format, round, regions, files)."""
    request = build_request(ws, round_number)
    predict = prediction or model_prediction(ws, round_number)
    predictions = {item.id: predict(item) for item in request.items}

    def crop(item: RequestItem) -> np.ndarray:
        cy0, cx0, cy1, cx1 = item.crop_box
        return to_uint8(ws.dataset.image(item.stem)[cy0:cy1, cx0:cx1])

    if fmt == "qupath":
        files = qupath.export(request, predictions, out, lambda stem: to_uint8(ws.dataset.image(stem)))
    elif fmt == "cvat":
        files = cvat.export(request, predictions, out, crop)
    elif fmt == "labelstudio":
        files = labelstudio.export(request, predictions, out, crop, image_url)
    else:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    return {"format": fmt, "round": round_number, "regions": len(request.items), "out": str(out),
            "files": len(files)}


def read_export(ws: WorkspaceCore, round_number: int, fmt: str, path: Path) -> dict[str, np.ndarray]:
    """One mask per requested region from a tool's export (a :class:`FormatError` names any problem)."""
    request = build_request(ws, round_number)
    readers = {"qupath": qupath.read, "cvat": cvat.read, "labelstudio": labelstudio.read}
    if fmt not in readers:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    return readers[fmt](Path(path), request)


def import_round(ws: WorkspaceCore, round_number: int | None, fmt: str, path: Path, annotator: str,
                 replace: bool = False) -> Staged | LabelsAccepted:
    """Convert a tool's export to one PNG mask per requested region and hand them in as ``annotator``
    through :func:`activeseg.workspace.intake.submit` (validated, staged or quarantined, recorded)."""
    n = ws.resolve(round_number)
    masks = read_export(ws, n, fmt, path)
    (ws.root / "tmp").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ws.root / "tmp") as folder:
        for region_id, mask in masks.items():
            (Path(folder) / f"{region_id}.png").write_bytes(mask_png(mask, ws.cfg.data.classes))
        return submit(ws, n, folder, annotator, replace)
