"""``full``: the upper bound, every training pixel labeled. Selects every candidate, ignoring the budget."""

from __future__ import annotations

import numpy as np

from activeseg.strategies.base import QueryContext, Selection, Strategy, take_within
from activeseg.strategies.registry import register


@register
class FullStrategy(Strategy):
    name = "full"
    needs_model = False

    def select(self, ctx: QueryContext) -> Selection:
        picks, costs = take_within(np.arange(len(ctx.candidates)), ctx, ctx.state.total_pixels(), {})
        return Selection(picks, [0.0] * len(picks), costs)
