"""The data of a campaign report, gathered from what a workspace stores: its round records
(``rounds/round-NNN/record.json``), the query maps (``query/maps/``), the accepted labels
(``labels/round-NNN/``), the validation results (``validation/dataset.json``,
``rounds/round-NNN/labels-validation.json``), the ledger (approvals, rejected batches, revocations) and
``status`` (the state of the campaign).

Nothing here names a path of the machine: the dataset is named by its folder name and quarantined
batches by their key in the object store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from activeseg.core.data import read_mask
from activeseg.core.util import read_json, round_name
from activeseg.metrics import METRICS
from activeseg.orchestration.engine import RunEngine
from activeseg.orchestration.status import headline, status
from activeseg.workspace import Workspace
from activeseg.workspace.exchange import context_box, to_uint8
from activeseg.workspace.ledger import VerifyResult, parse_time
from activeseg.workspace.query_maps import read_query_maps
from activeseg.workspace.records import RequestedRegion, RoundRecord
from activeseg.workspace.state import label_state, revocations


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
    ``prediction`` (h, w) of the model that asked (None when its query stored no maps); ``label`` the
    annotator's mask over the region's in-image part (y1 - y0, x1 - x0), None until accepted."""

    round: int
    id: str
    score: float | None
    cost: int | None
    image: np.ndarray
    inner: tuple[int, int, int, int]
    uncertainty: np.ndarray | None
    prediction: np.ndarray | None
    label: np.ndarray | None
    revoked: bool = False


@dataclass
class Quality:
    """The data quality section: the dataset's validation (``validation/dataset.json``), every label
    batch's (round, success, reasons), rejected batches (round, annotator, by, reasons, quarantine key),
    revocations and the ledger's verdict."""

    dataset: dict[str, Any] | None
    batches: list[dict[str, Any]]
    quarantined: list[dict[str, Any]]
    revoked: list[dict[str, Any]]
    verify: VerifyResult


@dataclass
class Campaign:
    """Everything the report shows. ``glance``: (what, value) lines; ``curve``: (labeled fraction, test
    Dice) per evaluated round; ``reference``: runs of a simulation (``results.json`` ``runs``) drawn as
    the reference curves, when one was given."""

    name: str
    state: str
    hint: str | None
    glance: list[tuple[str, str]]
    curve: list[tuple[float, float]]
    rows: list[RoundRow]
    regions: dict[int, list[RegionView]]
    quality: Quality
    classes: int
    reference: list[dict[str, Any]] = field(default_factory=list)


def gather(ws: Workspace, engine: RunEngine | None = None,
           reference: list[dict[str, Any]] | None = None) -> Campaign:
    """The report's data of workspace ``ws``; ``engine``: the Prefect engine for the state of the round
    run (None: the state as the workspace knows it, see :func:`activeseg.orchestration.status.status`)."""
    current = status(engine, ws)
    records = [r for r in ws.records.all() if r.round > 0]
    curve = [(row["labeled_pixel_fraction"], row["dice"]) for row in current["rounds"]]
    return Campaign(name=current["campaign"], state=headline(current), hint=current["hint"],
                    glance=glance(ws, current), curve=curve,
                    rows=[round_row(ws, r) for r in records if r.trained is not None],
                    regions={r.round: region_views(ws, r) for r in records if r.queried is not None},
                    quality=quality(ws), classes=ws.cfg.data.classes, reference=reference or [])


def glance(ws: Workspace, current: dict[str, Any]) -> list[tuple[str, str]]:
    """The campaign at a glance: dataset, strategy, rounds, labeled pixels of the pool, stop rule, state and
    the open label requests."""
    cfg, state, split = ws.cfg, label_state(ws), ws.split()
    closed = ws.current_round() - 1
    revealed, total = state.revealed_pixels(), state.total_pixels()
    sizes = ", ".join(f"{len(split[part])} {part}" for part in ("train", "val", "test"))
    return [
        ("dataset", f"{Path(cfg.data.dataset).name}: {len(ws.dataset.stems)} images ({sizes}), "
                    f"{cfg.data.classes} classes"),
        ("strategy", cfg.query.strategy),
        ("rounds", f"{closed} of {cfg.rounds} closed"),
        ("labeled pixels", f"{revealed:,} of {total:,} in the training pool ({revealed / max(total, 1):.2%})"),
        ("stop rule", stop_rule_text(ws) + (f"; holds: {current['stop']}" if current["stop"] else "; none holds")),
        ("state", headline(current)),
        ("open label requests", "; ".join(
            f"round {item['round']}: {item['regions']} regions, "
            + (f"batch from {item['staged']['annotator']} staged" if item["staged"] else "no batch staged")
            for item in current["pending"]) or "none"),
    ]


def stop_rule_text(ws: Workspace) -> str:
    """The campaign's stop rules in words (``rounds`` and ``campaign`` in params.yaml)."""
    rule = ws.cfg.campaign
    parts = [f"after {ws.cfg.rounds} rounds"]
    if rule.budget_pixels:
        parts.append(f"at {rule.budget_pixels:,} labeled pixels")
    if rule.budget_fraction:
        parts.append(f"at {rule.budget_fraction:.0%} of the pool labeled")
    if rule.plateau_rounds:
        parts.append(f"when test Dice gains less than {rule.plateau_delta} over {rule.plateau_rounds} rounds")
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


def region_views(ws: Workspace, record: RoundRecord) -> list[RegionView]:
    """The round's queried regions in request order, with the maps its query stored and the accepted labels."""
    maps = read_query_maps(ws.root, record.round)
    revoked = {i for entry in revocations(ws) if entry["round"] == record.round for i in entry["regions"]}
    labels = ws.root / "labels" / round_name(record.round)
    return [region_view(ws, record.round, r, maps.get(r.id, {}), labels / f"{r.id}.png", r.id in revoked)
            for r in record.queried.regions]


def region_view(ws: Workspace, round_number: int, requested: RequestedRegion, maps: dict[str, np.ndarray],
                label_path: Path, revoked: bool) -> RegionView:
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
                      revoked=revoked)


def quality(ws: Workspace) -> Quality:
    """The data quality section (see :class:`Quality`)."""
    dataset_path = ws.root / "validation" / "dataset.json"
    batches = []
    for n in ws.records.numbers():
        path = ws.root / "rounds" / round_name(n) / "labels-validation.json"
        if path.is_file():
            result = read_json(path)
            batches.append({"round": n, "success": result["success"], "reasons": result["reasons"]})
    quarantined = [{"round": e.round, "annotator": e.data["annotator"], "by": e.data.get("by"),
                    "reasons": e.data["reasons"], "quarantine": e.data["quarantine"]}
                   for e in ws.ledger.events(type="batch_rejected")]
    revoked = [{k: entry.get(k) for k in ("round", "regions", "by", "reason", "time")} for entry in revocations(ws)]
    dataset = read_json(dataset_path) if dataset_path.is_file() else None
    return Quality(dataset={k: dataset[k] for k in ("suite", "success", "reasons")} if dataset else None,
                   batches=batches, quarantined=quarantined, revoked=revoked, verify=ws.verify())
