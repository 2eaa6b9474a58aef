"""The formats in a workspace: a round's request and model prediction out, a tool's export in through
the existing submit path (validation, quarantine, ledger).

The request is the round's requested regions as the label request lists them (:meth:`RoundRecord.published`:
in request order, or sorted by id and without scores when the round holds controls; rank 1 first), each
with its in-image box and the crop (context margin) of the object-store request. The prediction is the
round's trained model (``record.trained``: the checkpoint must still be the one trained in that round)
applied to each region's whole image.

An export is also written into the round's request in the object store, ``requests/round-NNN/<format>/``,
with the prediction it carries (:data:`PREDICTION`, beside the tool's files): on import, a region whose
mask equals that prediction is recorded as ``reviewed_unchanged`` (an uncorrected prediction) in the
``labels_submitted`` event. The annotator recorded is the one the tool's export names, else the one
given. An export that cannot be read (:class:`FormatError`) is quarantined with its reason and recorded,
like a batch that fails validation; nothing of it is applied.
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from activeseg.core.data import Dataset
from activeseg.core.partition import Region
from activeseg.core.util import sha256_file
from activeseg.workspace.base import WorkspaceCore
from activeseg.workspace.errors import WorkspaceError
from activeseg.workspace.exchange.batches import read_path_batch
from activeseg.workspace.exchange.images import mask_png, to_uint8
from activeseg.workspace.exchange.layout import round_prefix
from activeseg.workspace.exchange.requests import context_box
from activeseg.workspace.exchange.formats import cvat, labelstudio, qupath
from activeseg.workspace.exchange.formats.common import FormatError, Labels, Request, RequestItem
from activeseg.workspace.access import os_user
from activeseg.workspace.exchange.intake import reject_unreadable, submit
from activeseg.workspace.identity import Actor, authorize
from activeseg.workspace.records import LabelsAccepted, Staged
from activeseg.workspace.exchange.request_docs import default_class_names

FORMATS = ("qupath", "cvat", "labelstudio")
PREDICTION = "activeseg-prediction.npz"
"""The prediction an export carries: one (h, w) uint8 class-id array per region id (npz, no pickles)."""
ANNOTATORS = {"qupath": qupath.annotators, "cvat": cvat.annotators, "labelstudio": labelstudio.annotators}
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
    downsample = {r.stem: dataset.slide(r.stem).downsample for r, _ in regions if dataset.is_slide(r.stem)}
    return Request(round_number, class_names, tuple(items), elsewhere or {}, downsample)


def build_request(ws: WorkspaceCore, round_number: int) -> Request:
    """The round's request as the formats see it (the ids of other rounds' requests kept to name a
    different round's export)."""
    record = ws.record(round_number)
    if record.queried is None and record.initial is None:
        raise WorkspaceError(f"round {round_number}: no label request was published yet")
    elsewhere = {ref.id: other.round for other in ws.records.all() if other.round != round_number
                 and (other.queried or other.initial) for ref in other.requested()}
    return make_request(ws.dataset, round_number, [(ref.region(), ref.score) for ref in record.published()],
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
        if ws.dataset.is_slide(item.stem):  # never predicted whole: the region with its context
            cy0, cx0 = item.crop_box[:2]
            mask = predict_mask(model, ws.dataset.read_box(item.stem, item.crop_box), device)
            y0, x0, y1, x1 = item.box
            return mask[y0 - cy0 : y1 - cy0, x0 - cx0 : x1 - cx0]
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
        return to_uint8(ws.dataset.read_box(item.stem, item.crop_box))

    def whole(stem: str) -> np.ndarray | None:
        """The image QuPath opens beside the GeoJSON; none for a whole-slide image (QuPath opens the slide)."""
        return None if ws.dataset.is_slide(stem) else to_uint8(ws.dataset.image(stem))

    if fmt == "qupath":
        files = qupath.export(request, predictions, out, whole)
    elif fmt == "cvat":
        files = cvat.export(request, predictions, out, crop)
    elif fmt == "labelstudio":
        files = labelstudio.export(request, predictions, out, crop, image_url)
    else:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **predictions)
    (out / PREDICTION).write_bytes(buffer.getvalue())
    files.append(out / PREDICTION)
    store_prefix = export_prefix(round_number, fmt)
    for file in files:
        ws.store.put_bytes(store_prefix + file.relative_to(out).as_posix(), file.read_bytes())
    return {"format": fmt, "round": round_number, "regions": len(request.items), "out": str(out),
            "files": len(files), "store": f"{ws.store.url}/{store_prefix}"}


def export_prefix(round_number: int, fmt: str) -> str:
    """Where a round's export in ``fmt`` goes in the store: ``requests/round-NNN/<fmt>/``."""
    return f"{round_prefix('requests', round_number)}{fmt}/"


def exported_prediction(ws: WorkspaceCore, round_number: int, fmt: str, path: Path) -> dict[str, np.ndarray] | None:
    """The prediction a round's export carried: the store's copy, else the :data:`PREDICTION` file beside
    the export at ``path``; None when neither is there or it cannot be read."""
    key = export_prefix(round_number, fmt) + PREDICTION
    local = (path if path.is_dir() else path.parent) / PREDICTION
    try:
        if ws.store.exists(key):
            data = ws.store.get_bytes(key)
        elif local.is_file() and not local.is_symlink():
            data = local.read_bytes()
        else:
            return None
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            return {name: arrays[name] for name in arrays.files}
    except (OSError, ValueError, zipfile.BadZipFile):
        return None


def reviewed_unchanged(masks: dict[str, np.ndarray], prediction: dict[str, np.ndarray] | None) -> list[str] | None:
    """The regions (in ``masks`` order) whose mask equals the exported prediction; None when no
    prediction is known."""
    if prediction is None:
        return None
    return [rid for rid, mask in masks.items() if rid in prediction and np.array_equal(mask, prediction[rid])]


def read_export(ws: WorkspaceCore, round_number: int, fmt: str, path: Path) -> Labels:
    """One mask per requested region from a tool's export, and the shapes clipped to each region (QuPath's;
    the other tools refuse paint outside a region); a :class:`FormatError` names any problem."""
    request = build_request(ws, round_number)
    if fmt == "qupath":
        return qupath.read_labels(Path(path), request)
    readers = {"cvat": cvat.read, "labelstudio": labelstudio.read}
    if fmt not in readers:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    return Labels(readers[fmt](Path(path), request))


def import_round(ws: WorkspaceCore, round_number: int | None, fmt: str, path: Path, annotator: str | None = None,
                 replace: bool = False, by: Actor | None = None) -> Staged | LabelsAccepted:
    """Convert a tool's export to one PNG mask per requested region and hand them in through
    :func:`activeseg.workspace.exchange.intake.submit` (validated, staged or quarantined, recorded) as the
    annotator the export names (several: joined by ``, ``), else ``annotator``. The ``labels_submitted``
    event also records the format, the annotator given, ``reviewed_unchanged`` and ``clipped`` (region id
    -> the shapes cut at its edge). An export that cannot be read is quarantined and recorded, and
    :class:`BatchRejected` raised with the reason. ``by`` hands it in (an annotator, see
    :func:`~activeseg.workspace.exchange.intake.ingest`; default: ``annotator``, else the OS user)."""
    n, path = ws.resolve(round_number), Path(path)
    by = by or Actor(annotator or os_user())
    authorize(ws, by, "labels_submitted", n, {"format": fmt, "annotator": annotator})
    try:
        labels = read_export(ws, n, fmt, path)
        named = ", ".join(ANNOTATORS[fmt](path))
    except FormatError as exc:
        entries = read_path_batch(path, ws.cfg.oracle.max_file_bytes)
        if not entries:  # nothing was handed in: nothing to keep
            raise
        base = path if path.is_dir() else path.parent  # reasons name files relative to what was handed in
        reason = str(exc).replace(f"{base.resolve()}/", "").replace(f"{base}/", "")
        raise reject_unreadable(ws, n, entries, annotator or by.name, [reason], f"{fmt} export") from None
    who = named or annotator or by.name
    details = {"format": fmt, "annotator_given": annotator,
               "reviewed_unchanged": reviewed_unchanged(labels.masks, exported_prediction(ws, n, fmt, path)),
               "clipped": labels.clipped}
    (ws.root / "tmp").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ws.root / "tmp") as folder:
        for region_id, mask in labels.masks.items():
            (Path(folder) / f"{region_id}.png").write_bytes(mask_png(mask, ws.cfg.data.classes))
        return submit(ws, n, folder, by, replace, details, annotator=who)
