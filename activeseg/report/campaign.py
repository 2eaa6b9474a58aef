"""The data of a campaign report, gathered from what a workspace stores: its round records
(``rounds/round-NNN/record.json``), the query maps (``query/maps/``), the accepted labels
(``labels/round-NNN/``), the pre-annotation a round exported to the annotators' tools
(``requests/round-NNN/<format>/activeseg-prediction.npz`` in the object store), the validation results
(``validation/dataset.json``, ``rounds/round-NNN/labels-validation.json``), the ledger (approvals,
rejected batches, revocations) and ``status`` (the state of the campaign).

Nothing here names a path of the machine: the dataset is named by its folder name, quarantined batches
by their key in the object store, and the folders of any absolute path in a reason (a tool's export
names its file as the submitter's machine saw it) are dropped, leaving the file's name.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from activeseg.core.data import read_mask
from activeseg.core.util import read_json, round_name
from activeseg.loop.stop_rules import PLATEAU_DICE
from activeseg.metrics import METRICS
from activeseg.orchestration.engine import RunEngine
from activeseg.orchestration.status import headline, status
from activeseg.workspace import Workspace
from activeseg.workspace.exchange.images import to_uint8
from activeseg.workspace.exchange.requests import context_box
from activeseg.workspace.exchange.formats.service import FORMATS, PREDICTION, export_prefix
from activeseg.workspace.ledger import VerifyResult, parse_time
from activeseg.workspace.query_maps import read_query_maps
from activeseg.workspace.records import RequestedRegion, RoundRecord
from activeseg.workspace.state import label_state, revocations

ABSOLUTE_FOLDERS = re.compile(r"""(?<![^\s'"(])/(?:[^\s/:'"]+/)+""")
"""The folders of an absolute path that starts a word: ``/home/ann/export/`` of ``/home/ann/export/a.xml``."""


@dataclass
class RoundRow:
    """One line of the per-round table: a round whose model was trained."""

    round: int
    labeled_pixels: int
    labeled_fraction: float
    val_dice: float
    metrics: dict[str, float | int | None]
    """Test metrics (``METRICS``) of the round's model, empty until the round is evaluated."""
    train_steps: int | None
    train_seconds: float | None
    annotator: str | None
    approver: str | None
    wait_seconds: float | None
    """From the query (the request's creation) to the accepted labels; None while the round waits."""
    model_sha256: str
    mlflow_run_id: str | None


@dataclass
class RegionView:
    """A queried region in its context: ``image`` (h, w, 3) uint8, the context crop of the label request;
    ``inner`` (y0, x0, y1, x1) the region's in-image part in crop pixels; ``uncertainty`` (h, w) and
    ``prediction`` (h, w) of the model that asked, as its query saw them (MC dropout; None when its query
    stored no maps); ``pre_annotation`` (y1 - y0, x1 - x0) the prediction exported to the annotator's
    tool (the round's model, dropout off; None when the round exported none); ``label`` the annotator's
    mask over the region's in-image part (y1 - y0, x1 - x0), None until accepted; ``unchanged``: the
    annotator handed the pre-annotation back as the mask, unchanged."""

    round: int
    id: str
    score: float | None
    cost: int | None
    image: np.ndarray
    inner: tuple[int, int, int, int]
    uncertainty: np.ndarray | None
    prediction: np.ndarray | None
    label: np.ndarray | None
    pre_annotation: np.ndarray | None = None
    unchanged: bool = False
    revoked: bool = False
    control: bool = False
    """A control: drawn at random to estimate the model's Dice on the pool (:mod:`activeseg.loop.control`)."""

    def compared_prediction(self) -> np.ndarray | None:
        """(y1 - y0, x1 - x0) the prediction the labels are compared with: the exported pre-annotation,
        else the query's prediction inside the region; None without either."""
        if self.pre_annotation is not None:
            return self.pre_annotation
        if self.prediction is None:
            return None
        y0, x0, y1, x1 = self.inner
        return self.prediction[y0:y1, x0:x1]


@dataclass
class RoundRegions:
    """A round's queried regions (``views``, in request order) and how their labels came back:
    ``pre_annotation`` the format whose exported prediction the labels are compared with (None: the round
    exported none, they are compared with the query's prediction); ``unchanged`` how many masks the
    annotator handed back as the pre-annotation unchanged (None: not known, i.e. no labels yet or a
    batch that did not come through a tool import of a known pre-annotation)."""

    views: list[RegionView]
    pre_annotation: str | None
    unchanged: int | None


@dataclass
class Quality:
    """The data quality section: the dataset's validation (``validation/dataset.json``), every label
    batch's (round, success, reasons), quarantined batches (rejected, replaced or changed after staging:
    round, annotator, by, reasons, quarantine key), refused approvals (round, approver, batch, reason,
    time, flow run), revocations and the ledger's verdict."""

    dataset: dict[str, Any] | None
    batches: list[dict[str, Any]]
    quarantined: list[dict[str, Any]]
    refused: list[dict[str, Any]]
    revoked: list[dict[str, Any]]
    verify: VerifyResult


@dataclass
class Campaign:
    """Everything the report shows. ``glance``: (what, value) lines; ``curve``: (round, labeled fraction,
    test Dice) per evaluated round (round 1's model trained on the initial labeled set, round 0's);
    ``reference``: runs of a simulation (``results.json`` ``runs``) drawn as
    the reference curves, when one was given; ``controls``: the control check of every round whose labels
    landed with controls (:func:`activeseg.workspace.audit.control_estimates`)."""

    name: str
    state: str
    hint: str | None
    glance: list[tuple[str, str]]
    curve: list[tuple[int, float, float]]
    rows: list[RoundRow]
    regions: dict[int, RoundRegions]
    quality: Quality
    classes: int
    reference: list[dict[str, Any]] = field(default_factory=list)
    controls: list[dict[str, Any]] = field(default_factory=list)


def gather(ws: Workspace, engine: RunEngine | None = None,
           reference: list[dict[str, Any]] | None = None) -> Campaign:
    """The report's data of workspace ``ws``; ``engine``: the Prefect engine for the state of the round
    run (None: the state as the workspace knows it, see :func:`activeseg.orchestration.status.status`)."""
    current = status(engine, ws)
    records = [r for r in ws.records.all() if r.round > 0]
    curve = [(row["round"], row["labeled_pixel_fraction"], row["dice"]) for row in current["rounds"]]
    return Campaign(name=current["campaign"], state=headline(current), hint=current["hint"],
                    glance=glance(ws, current), curve=curve,
                    rows=[round_row(ws, r) for r in records if r.trained is not None],
                    regions={r.round: round_regions(ws, r) for r in records if r.queried is not None},
                    quality=quality(ws), classes=ws.cfg.data.classes, reference=reference or [],
                    controls=current["controls"])


def glance(ws: Workspace, current: dict[str, Any]) -> list[tuple[str, str]]:
    """The campaign at a glance: dataset, strategy, rounds, labeled pixels of the pool, stop rule, state and
    the open label requests."""
    cfg, state, split = ws.cfg, label_state(ws), ws.split()
    revealed, total = state.revealed_pixels(), state.total_pixels()
    sizes = ", ".join(f"{len(split[part])} {part}" for part in ("train", "val", "test"))
    return [
        ("dataset", f"{Path(cfg.data.dataset).name}: {len(ws.dataset.stems)} images ({sizes}), "
                    f"{cfg.data.classes} classes"),
        ("strategy", cfg.query.strategy),
        ("rounds", rounds_text(ws.current_round() - 1, cfg.rounds)),
        ("labeled pixels", f"{revealed:,} of {total:,} in the training pool ({revealed / max(total, 1):.2%})"),
        ("stop rule", stop_rule_text(ws) + (f"; holds: {current['stop']}" if current["stop"] else "; none holds")),
        ("state", headline(current)),
        ("open label requests", "; ".join(
            f"round {item['round']}: {item['regions']} regions, "
            + (f"batch from {item['staged']['annotator']} staged" if item["staged"] else "no batch staged")
            for item in current["pending"]) or "none"),
    ]


def rounds_text(closed: int, planned: int) -> str:
    """How many rounds closed against the ``planned`` ones (params ``rounds``); ``round start --force``
    may start rounds past the plan."""
    if closed <= planned:
        return f"{closed} of {planned} closed"
    return f"{closed} rounds closed ({planned} planned, {closed - planned} forced past the plan)"


def stop_rule_text(ws: Workspace) -> str:
    """The campaign's stop rules in words (``rounds`` and ``campaign`` in params.yaml)."""
    rule = ws.cfg.campaign
    parts = [f"after {ws.cfg.rounds} rounds"]
    if rule.budget_pixels:
        parts.append(f"at {rule.budget_pixels:,} labeled pixels")
    if rule.budget_fraction:
        parts.append(f"at {rule.budget_fraction:.0%} of the pool labeled")
    if rule.plateau_rounds:
        parts.append(f"when the {PLATEAU_DICE[rule.plateau_on]} gains less than {rule.plateau_delta} over "
                     f"{rule.plateau_rounds} rounds")
    return ", ".join(parts)


def round_row(ws: Workspace, record: RoundRecord) -> RoundRow:
    """The table line of a trained round (see :class:`RoundRow`)."""
    trained, accepted, queried = record.trained, record.labels_accepted, record.queried
    approval = ws.ledger.last("labels_approved", round=record.round)
    wait = None
    if accepted is not None and queried is not None:
        wait = (parse_time(accepted.time) - parse_time(queried.created)).total_seconds()
    metrics = record.evaluated.metrics if record.evaluated is not None else {}
    return RoundRow(round=record.round, labeled_pixels=trained.revealed_pixels,
                    labeled_fraction=trained.labeled_pixel_fraction, val_dice=trained.val_dice,
                    metrics={m: metrics.get(m) for m in METRICS} if metrics else {},
                    train_steps=trained.train_steps, train_seconds=trained.train_seconds,
                    annotator=accepted.annotator if accepted else None,
                    approver=approval.data["approver"] if approval else None, wait_seconds=wait,
                    model_sha256=trained.checkpoint_sha256, mlflow_run_id=trained.mlflow_run_id)


def round_regions(ws: Workspace, record: RoundRecord) -> RoundRegions:
    """The round's queried regions with how their labels came back (see :class:`RoundRegions`)."""
    fmt = pre_annotation_format(ws, record)
    views = region_views(ws, record, fmt)
    accepted = record.labels_accepted
    known = accepted is not None and accepted.reviewed_unchanged is not None
    return RoundRegions(views=views, pre_annotation=fmt, unchanged=sum(v.unchanged for v in views) if known else None)


def region_views(ws: Workspace, record: RoundRecord, pre_annotation: str | None = None) -> list[RegionView]:
    """The round's queried regions in request order, with the maps its query stored, the accepted labels
    and the prediction exported in format ``pre_annotation`` (None: none)."""
    maps = read_query_maps(ws.root, record.round)
    exported = exported_prediction(ws, record.round, pre_annotation) if pre_annotation else {}
    revoked = {i for entry in revocations(ws) if entry["round"] == record.round for i in entry["regions"]}
    accepted = record.labels_accepted
    unchanged = set(accepted.reviewed_unchanged or []) if accepted is not None else set()
    labels = ws.root / "labels" / round_name(record.round)
    controls = set(record.queried.controls or ())
    return [region_view(ws, record.round, r, maps.get(r.id, {}), labels / f"{r.id}.png", exported.get(r.id),
                        unchanged=r.id in unchanged, revoked=r.id in revoked, control=r.id in controls)
            for r in record.queried.regions]


def pre_annotation_format(ws: Workspace, record: RoundRecord) -> str | None:
    """The format whose exported prediction counts as the round's pre-annotation: the accepted batch's
    tool format when the round exported it, else the first of ``FORMATS`` the round exported; None
    before the labels are in or when the round exported none."""
    accepted = record.labels_accepted
    if accepted is None:
        return None
    submitted = [e for e in ws.ledger.events(type="labels_submitted", round=record.round)
                 if e.data.get("batch_sha256") == accepted.batch_sha256]
    tool = submitted[-1].data.get("format") if submitted else None
    candidates = [tool] + list(FORMATS) if tool else list(FORMATS)
    return next((f for f in candidates if ws.store.exists(export_prefix(record.round, f) + PREDICTION)), None)


def exported_prediction(ws: Workspace, round_number: int, fmt: str) -> dict[str, np.ndarray]:
    """{region id: (h, w) uint8 class ids of its in-image part}: the prediction the round's export in
    ``fmt`` carried, as the object store keeps it."""
    data = ws.store.get_bytes(export_prefix(round_number, fmt) + PREDICTION)
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        return {name: arrays[name] for name in arrays.files}


def region_view(ws: Workspace, round_number: int, requested: RequestedRegion, maps: dict[str, np.ndarray],
                label_path: Path, pre_annotation: np.ndarray | None, unchanged: bool, revoked: bool,
                control: bool) -> RegionView:
    region = requested.region()
    sample = ws.dataset.samples[region.stem]
    cy0, cx0, cy1, cx1 = context_box(region, sample.height, sample.width)
    ys, xs = region.clipped(sample.height, sample.width)
    image = to_uint8(ws.dataset.read_box(region.stem, (cy0, cx0, cy1, cx1)))
    rgb = np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image
    label = read_mask(label_path, ws.cfg.data.classes) if label_path.is_file() else None
    return RegionView(round=round_number, id=region.id, score=requested.score, cost=requested.cost, image=rgb,
                      inner=(ys.start - cy0, xs.start - cx0, ys.stop - cy0, xs.stop - cx0),
                      uncertainty=maps.get("uncertainty"), prediction=maps.get("prediction"), label=label,
                      pre_annotation=pre_annotation, unchanged=unchanged, revoked=revoked, control=control)


def quality(ws: Workspace) -> Quality:
    """The data quality section (see :class:`Quality`)."""
    dataset_path = ws.root / "validation" / "dataset.json"
    batches = []
    for n in ws.records.numbers():
        path = ws.root / "rounds" / round_name(n) / "labels-validation.json"
        if path.is_file():
            result = read_json(path)
            batches.append({"round": n, "success": result["success"],
                            "reasons": without_folders(result["reasons"])})
    quarantined = [{"round": e.round, "annotator": e.data["annotator"], "by": e.data.get("by"),
                    "reasons": without_folders(e.data.get("reasons") or [e.data["reason"]]),
                    "quarantine": e.data["quarantine"]}
                   for e in ws.ledger.events() if e.type in ("batch_rejected", "batch_unstaged")]
    refused = [{"round": e.round, "approver": e.data["approver"], "batch": e.data["batch_sha256"][:12],
                "reason": without_folders([e.data["reason"]])[0], "time": e.time[:19].replace("T", " "),
                "flow_run": e.data["flow_run_id"]} for e in ws.ledger.events(type="approval_refused")]
    revoked = [{k: entry.get(k) for k in ("round", "regions", "by", "reason", "time")} for entry in revocations(ws)]
    dataset = read_json(dataset_path) if dataset_path.is_file() else None
    return Quality(dataset={"suite": dataset["suite"], "success": dataset["success"],
                            "reasons": without_folders(dataset["reasons"])} if dataset else None,
                   batches=batches, quarantined=quarantined, refused=refused, revoked=revoked, verify=ws.verify())


def without_folders(reasons: list[str]) -> list[str]:
    """``reasons`` with the folders of every absolute path dropped, the file's name kept:
    ``/home/ann/export/a.geojson: malformed JSON`` -> ``a.geojson: malformed JSON``."""
    return [ABSOLUTE_FOLDERS.sub("", reason) for reason in reasons]
