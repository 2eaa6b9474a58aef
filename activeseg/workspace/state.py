"""The known masks of a workspace (:class:`LabelState` in ``state/``), rebuilt from the accepted label
files when out of date; ``state/source.json`` lists the (round, annotator) batches it was built from."""

from __future__ import annotations

import numpy as np

from activeseg.core.data import read_mask
from activeseg.core.labels import LabelState
from activeseg.core.util import read_json, round_name, write_json
from activeseg.workspace.base import WorkspaceCore


def build_state(ws: WorkspaceCore, accepted: list[tuple[int, str]]) -> LabelState:
    """Known masks from the accepted label files of the given rounds, in order, each round's
    pseudo-labels applied after its labels (as in the simulation)."""
    dataset, classes = ws.dataset, ws.cfg.data.classes
    shapes = {s: (dataset.samples[s].height, dataset.samples[s].width) for s in ws.split()["train"]}
    state = LabelState.empty(shapes)
    for round_number, annotator in accepted:
        record = ws.record(round_number)
        folder = ws.root / "labels" / round_name(round_number)
        for item in record.requested():
            state.reveal(item.region(), read_mask(folder / f"{item.id}.png", classes), round_number, annotator)
        pseudo = record.queried.pseudo if record.queried is not None else None
        if pseudo is not None:
            from activeseg.loop.selection import apply_pseudo  # torch: loaded only when needed

            with np.load(ws.root / pseudo.file) as masks:
                regions = [(p.region(), masks[p.id]) for p in pseudo.regions]
            apply_pseudo(state, regions, pseudo.origin, pseudo.replace)
    return state


def save_state(ws: WorkspaceCore, accepted: list[tuple[int, str]]) -> LabelState:
    """Rebuild ``state/`` from the given batches (source.json written last)."""
    state = build_state(ws, accepted)
    folder = ws.root / "state"
    (folder / "source.json").unlink(missing_ok=True)
    state.save(folder)
    write_json(folder / "source.json", accepted)
    return state


def label_state(ws: WorkspaceCore) -> LabelState:
    """The known masks after every accepted batch (``state/``, rebuilt when out of date)."""
    accepted = ws.records.accepted()
    source = ws.root / "state" / "source.json"
    if source.is_file() and [tuple(x) for x in read_json(source)] == accepted:
        return LabelState.load(ws.root / "state")
    return save_state(ws, accepted)
