"""Shared by the strategies that pseudo-label (``ceal``, ``label_propagation``); registers no strategy.

Provenance (see :class:`activeseg.core.labels.LabelState`): pseudo-labels live in their own layer, never count
as annotation cost, give way to a human label of the same pixels, and carry the id of the model that
made them (``ctx.model_id``, the checkpoint path in a simulation). Both strategies refresh them every
round: their selection sets ``replace_pseudo``, so the earlier round's pseudo-labels (made by an older
model) are cleared before the new ones are written, as CEAL recomputes them with every new model.
"""

from __future__ import annotations

import numpy as np

from activeseg.core.partition import Region
from activeseg.strategies.base import QueryContext


def open_pixels_after(ctx: QueryContext, picks: list[int], regions: list[Region]) -> np.ndarray:
    """(len(regions),) pixels of each region still unknown once the candidates ``picks`` are revealed."""
    known: dict[str, np.ndarray] = {}
    for i in picks:
        region = ctx.candidates[i]
        mask = known.setdefault(region.stem, ctx.state.known[region.stem].copy())
        mask[region.clipped(*mask.shape)] = True
    out = np.zeros(len(regions), np.int64)
    for j, region in enumerate(regions):
        mask = known.get(region.stem, ctx.state.known[region.stem])
        out[j] = int((~mask[region.clipped(*mask.shape)]).sum())
    return out
