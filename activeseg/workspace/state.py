"""The known masks of a workspace (:class:`LabelState` in ``state/``), rebuilt from the accepted label
files when out of date; ``state/source.json`` lists the (round, annotator) batches it was built from
and the revoked (round, region id) pairs it left out.

Revoked labels (``labels/revoked.json``, committed; see :mod:`.exchange.revocation`) are never revealed: the
state is rebuilt from the accepted files without them, so a revoked region's pixels stay unknown
unless another, non-revoked region reveals them."""

from __future__ import annotations

from typing import Any

import numpy as np

from activeseg.core.data import read_mask
from activeseg.core.labels import LabelState
from activeseg.core.util import read_json, round_name, write_json
from activeseg.workspace.base import WorkspaceCore

REVOKED = "labels/revoked.json"
"""The revocations of a workspace, in order (committed in git; entries are only ever appended)."""


def revocations(ws: WorkspaceCore) -> list[dict[str, Any]]:
    """The recorded revocations (``labels/revoked.json``): dicts with round, regions, by, reason,
    batch_sha256, annotator, time; empty when nothing was revoked."""
    path = ws.root / REVOKED
    return read_json(path) if path.is_file() else []


def revoked_pairs(ws: WorkspaceCore) -> set[tuple[int, str]]:
    """(round, region id) of every revoked label."""
    return {(entry["round"], region) for entry in revocations(ws) for region in entry["regions"]}


def build_state(ws: WorkspaceCore, accepted: list[tuple[int, str]],
                revoked: set[tuple[int, str]] | None = None) -> LabelState:
    """Known masks from the accepted label files of the given rounds, in order, each round's
    pseudo-labels applied after its labels (as in the simulation). The ``revoked`` (round, region id)
    labels (default: :func:`revoked_pairs`) are left out."""
    revoked = revoked_pairs(ws) if revoked is None else revoked
    dataset, classes = ws.dataset, ws.cfg.data.classes
    shapes = {s: (dataset.samples[s].height, dataset.samples[s].width) for s in ws.split()["train"]}
    state = LabelState.empty(shapes)
    for round_number, annotator in accepted:
        record = ws.record(round_number)
        folder = ws.root / "labels" / round_name(round_number)
        for item in record.requested():
            if (round_number, item.id) in revoked:
                continue
            state.reveal(item.region(), read_mask(folder / f"{item.id}.png", classes), round_number, annotator)
        pseudo = record.queried.pseudo if record.queried is not None else None
        if pseudo is not None:
            from activeseg.loop.selection import apply_pseudo  # torch: loaded only when needed

            with np.load(ws.root / pseudo.file) as masks:
                regions = [(p.region(), masks[p.id]) for p in pseudo.regions]
            apply_pseudo(state, regions, pseudo.origin, pseudo.replace)
    return state


def _source(ws: WorkspaceCore, accepted: list[tuple[int, str]]) -> dict[str, Any]:
    """What ``state/`` is built from: the accepted batches and the revoked labels (sorted)."""
    return {"accepted": [list(a) for a in accepted], "revoked": sorted([r, i] for r, i in revoked_pairs(ws))}


def save_state(ws: WorkspaceCore, accepted: list[tuple[int, str]]) -> LabelState:
    """Rebuild ``state/`` from the given batches, less the revoked labels (source.json written last)."""
    state = build_state(ws, accepted)
    folder = ws.root / "state"
    (folder / "source.json").unlink(missing_ok=True)
    state.save(folder)
    write_json(folder / "source.json", _source(ws, accepted))
    return state


def label_state(ws: WorkspaceCore) -> LabelState:
    """The known masks after every accepted batch, less the revoked labels (``state/``, rebuilt when
    out of date)."""
    accepted = ws.records.accepted()
    source = ws.root / "state" / "source.json"
    if source.is_file() and read_json(source) == _source(ws, accepted):
        return LabelState.load(ws.root / "state")
    return save_state(ws, accepted)
