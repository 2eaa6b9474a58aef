"""Typed round records: what each step of a round did, stored in ``rounds/round-NNN/record.json``.

A record holds one entry per finished step (``initial`` for round 0, made by ``init``; ``trained``,
``queried``, ``staged``, ``labels_accepted``, ``evaluated`` for the rounds). ``staged`` is the batch that
passed validation and waits for a reviewer: it is cleared when the batch is approved (taken in as
``labels_accepted``) or rejected; ``control``, the control check of a round that requested controls,
is written with ``labels_accepted``. A step writes its outputs first and
its entry last, so an entry present means the step finished. The JSON is exactly the models' fields
(an absent entry is left out), so records written by earlier versions open unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer

from activeseg.core.partition import Region
from activeseg.core.util import read_json, round_name, write_json


class Entry(BaseModel):
    """A record entry: exactly the fields written (an unknown key is an error naming it)."""

    model_config = ConfigDict(extra="forbid")


class GrownEntry(Entry):
    """An entry that gained fields after its first version (those with a default): they are left out
    while None, so a record written before them saves back unchanged."""

    @model_serializer(mode="wrap")
    def _leave_out_absent(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        return {k: v for k, v in data.items() if v is not None or type(self).model_fields[k].is_required()}


class RegionRef(Entry):
    """A region as stored: its id, image stem and box ``[y0, x0, y1, x1]``."""

    id: str
    stem: str
    box: list[int]

    def region(self) -> Region:
        return Region(self.stem, *self.box)


class RequestedRegion(RegionRef):
    """A region whose labels were asked for: the pixels it newly reveals and its strategy score
    (both None for the initial set)."""

    cost: int | None
    score: float | None


class Initial(Entry):
    """Round 0: the initial labeled set, chosen by ``strategy`` (``random`` with ``seed``, or ``typiclust`` /
    ``maxherding`` from the pool's embeddings: ``partition.initial_strategy``)."""

    seed: int
    regions: list[RequestedRegion]
    strategy: str = "random"


class Trained(GrownEntry):
    """The round's model; ``train_steps``, ``stop_epoch`` and ``train_seconds`` are None in records
    written before training length followed the labels."""

    round: int
    checkpoint: str
    checkpoint_sha256: str
    mlflow_run_id: str | None
    val_dice: float
    best_epoch: int
    revealed_pixels: int
    labeled_pixel_fraction: float
    train_steps: int | None = None
    stop_epoch: int | None = None
    train_seconds: float | None = None
    predicted_classes: list[int] | None = None
    """The classes the model predicts anywhere on the validation images (None in records of earlier versions)."""
    collapsed: str | None = None
    """Why the model counts as collapsed (one class everywhere on validation, or val Dice 0), else None."""


class Pretrained(Entry):
    """The campaign's pretrained network (``pretrain/pretrain.json``, beside its checkpoint): not a round's
    entry, as it is made once and remade only when ``inputs_sha256`` (the pool's images and regions, the
    ``pretrain`` and ``model`` settings, the method's code) changes."""

    inputs_sha256: str
    checkpoint: str
    checkpoint_sha256: str
    mlflow_run_id: str | None
    steps: int
    first_loss: float
    last_loss: float
    seconds: float
    created: str


class PseudoLabels(Entry):
    """The pseudo-labels a strategy made with the query: masks in ``file`` (npz keyed by region id)."""

    file: str
    regions: list[RegionRef]
    origin: str
    replace: bool


class Queried(GrownEntry):
    """The selection and the label request published for it. ``regions``: the strategy's picks in pick
    order, then the round's controls, then any region a revocation returned to the request; ``budget`` and
    ``spent``: the round's, picks and controls together."""

    round: int
    created: str
    strategy: str
    options: dict[str, Any]
    budget: int
    spent: int
    checkpoint_sha256: str
    mlflow_run_id: str | None
    regions: list[RequestedRegion]
    pseudo: PseudoLabels | None
    request: str
    manifest_sha256: str
    details: dict[str, Any] | None = None
    """What else the strategy decided (``Selection.details``: e.g. coverage_then_uncertainty's branch and the
    pool's coverage); None for most strategies and in older records."""
    controls: list[str] | None = None
    """The ids of the regions drawn uniformly at random as controls (:mod:`activeseg.loop.control`), among
    ``regions``; None when the round drew none. Only the workspace knows them: the request does not say."""

    def picks(self) -> list[RequestedRegion]:
        """The strategy's picks: the regions with a score that are not controls (a region a revocation
        returned to the request has no score)."""
        controls = set(self.controls or ())
        return [r for r in self.regions if r.id not in controls and r.score is not None]

    def control_regions(self) -> list[RequestedRegion]:
        """The controls, in draw order."""
        by_id = {r.id: r for r in self.regions}
        return [by_id[i] for i in self.controls or ()]

    def published(self) -> list[RequestedRegion]:
        """The regions as the label request lists them. With controls: sorted by id and without scores, so
        that neither their place nor a missing score tells a control from a pick; else in request order,
        the strategy's highest score first."""
        if not self.controls:
            return self.regions
        return sorted((r.model_copy(update={"score": None}) for r in self.regions), key=lambda r: r.id)


class Staged(Entry):
    """A label batch that passed validation and waits for approval in its staged place
    ``staged/round-NNN/<batch sha256>/`` in the store: not in labels/, the training label state or a
    commit. ``replaces``: the hash of the staged batch it replaced (``--replace``), else None."""

    round: int
    annotator: str
    batch_sha256: str
    files: int
    time: str
    replaces: str | None = None
    reviewed_unchanged: list[str] | None = None
    """The regions whose label is the exported model prediction sent back unchanged (a tool import that
    knows the prediction it exported), else None."""
    clipped: dict[str, list[str]] | None = None
    """Per region id, the tool's shapes that crossed the region's edge and were clipped to it (a QuPath
    import), else None."""


class LabelsAccepted(GrownEntry):
    """The accepted label batch (``batch_sha256`` None for the initial set) and its commit;
    ``reviewed_unchanged`` and ``clipped``: the staged batch's (see :class:`Staged`)."""

    round: int
    annotator: str
    batch_sha256: str | None
    files: int
    commit: str
    revealed_pixels: int
    known_pixel_fraction: float
    time: str
    reviewed_unchanged: list[str] | None = None
    clipped: dict[str, list[str]] | None = None


class ControlCheck(Entry):
    """The control check of a round whose request held controls, made when its labels were accepted, before
    any model trained on them (:mod:`activeseg.loop.control`): the Dice of the model that chose the round's
    regions against the accepted labels, per region (``region_dice``, by id), its mean over the strategy's
    picks (``queried_dice``, None without a pick) and over the controls (``control_dice``): the estimate of
    the model's mean per-region Dice on the pool the strategy left, with its 95 % Wilson interval
    [``low``, ``high``] (None with a single control)."""

    round: int
    checkpoint_sha256: str
    queried_dice: float | None
    control_dice: float
    low: float | None
    high: float | None
    n_queried: int
    n_controls: int
    region_dice: dict[str, float]
    mlflow_run_id: str | None


class Evaluated(Entry):
    """Test metrics of the round's model: each metric's mean over the split's images (None when no
    image had it) and, for distances, how many images were skipped."""

    round: int
    metrics: dict[str, float | int | None]
    split: str
    checkpoint_sha256: str
    mlflow_run_id: str | None
    labeled_pixel_fraction: float


class RoundRecord(Entry):
    """Everything a round's steps recorded; an entry is None until its step finished."""

    round: int
    initial: Initial | None = None
    trained: Trained | None = None
    queried: Queried | None = None
    staged: Staged | None = None
    labels_accepted: LabelsAccepted | None = None
    control: ControlCheck | None = None
    evaluated: Evaluated | None = None

    def requested(self) -> list[RequestedRegion]:
        """The regions asked for in this round (round 0: the initial set)."""
        return self.initial.regions if self.initial is not None else self.queried.regions

    def published(self) -> list[RequestedRegion]:
        """The requested regions as the label request lists them (:meth:`Queried.published`; round 0: the
        initial set)."""
        return self.initial.regions if self.initial is not None else self.queried.published()

    def to_json(self) -> dict[str, Any]:
        """The record.json content: the entries present, in step order."""
        return {key: value for key, value in self.model_dump().items() if value is not None}


class Records:
    """The round records of a workspace, under ``rounds/``."""

    def __init__(self, root: Path):
        self.root = root

    def path(self, round_number: int) -> Path:
        return self.root / "rounds" / round_name(round_number) / "record.json"

    def read(self, round_number: int) -> RoundRecord:
        """The round's record (empty when none of its steps ran); a malformed file is named."""
        path = self.path(round_number)
        if not path.is_file():
            return RoundRecord(round=round_number)
        try:
            return RoundRecord.model_validate(read_json(path))
        except ValueError as exc:
            raise ValueError(f"{path}: not a valid round record: {exc}") from None

    def save(self, record: RoundRecord) -> None:
        write_json(self.path(record.round), record.to_json())

    def numbers(self) -> list[int]:
        """The recorded round numbers, ascending."""
        paths = (self.root / "rounds").glob("round-*/record.json")
        return sorted(int(p.parent.name.removeprefix("round-")) for p in paths)

    def all(self) -> list[RoundRecord]:
        return [self.read(n) for n in self.numbers()]

    def accepted(self) -> list[tuple[int, str]]:
        """(round, annotator) of every accepted label batch, in round order."""
        return [(r.round, r.labels_accepted.annotator) for r in self.all() if r.labels_accepted is not None]
