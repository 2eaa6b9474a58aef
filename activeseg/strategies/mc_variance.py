"""``mc_variance``: MC-dropout variance (BSQ Eq. 2; Jethaliya et al.'s uncertainty map).

Per pixel, the variance of the class probabilities across T stochastic passes, averaged over classes;
per region, the mean over its in-image pixels (the reduction the papers' README asks to name). Gorriz
et al. sum over pixels instead; with a pixel budget the mean avoids favouring large regions.
"""

from __future__ import annotations

import numpy as np

from activeseg.strategies.base import QueryContext, Strategy
from activeseg.strategies.registry import register


@register
class McVarianceStrategy(Strategy):
    name = "mc_variance"

    def score(self, ctx: QueryContext) -> np.ndarray:
        return ctx.pool.variance
