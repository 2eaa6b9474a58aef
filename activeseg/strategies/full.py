"""``full``: the upper bound, every training pixel labeled. Selects every candidate, ignoring the budget."""

from __future__ import annotations

from activeseg.strategies.base import QueryContext, Selection, Strategy
from activeseg.strategies.registry import register


@register
class FullStrategy(Strategy):
    name = "full"
    needs_model = False

    def select(self, ctx: QueryContext) -> Selection:
        indices = [i for i, c in enumerate(ctx.costs) if c > 0]
        # overlapping candidates: count each pixel once
        seen = {stem: known.copy() for stem, known in ctx.state.known.items()}
        costs = []
        for i in indices:
            r = ctx.candidates[i]
            ys, xs = r.clipped(*seen[r.stem].shape)
            costs.append(int((~seen[r.stem][ys, xs]).sum()))
            seen[r.stem][ys, xs] = True
        return Selection(indices, [0.0] * len(indices), costs)
