"""``entropy``: mean pixel entropy of the MC-averaged prediction, H(mean_t p_t), per region.

Decision: the per-pixel entropy (natural log) is reduced by the mean over the region's in-image pixels,
so regions of different sizes are comparable; the budget, not the score, accounts for size.
"""

from __future__ import annotations

import numpy as np

from activeseg.strategies.base import QueryContext, Strategy
from activeseg.strategies.registry import register


@register
class EntropyStrategy(Strategy):
    name = "entropy"

    def score(self, ctx: QueryContext) -> np.ndarray:
        return ctx.pool.entropy
