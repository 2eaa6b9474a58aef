"""``bald``: Bayesian active learning by disagreement (Gal et al. 2017), per region.

Per pixel, the mutual information between the prediction and the model weights under MC dropout,
H(mean_t p_t) - mean_t H(p_t) over T stochastic passes (natural log); per region, the mean over its
in-image pixels (the reduction ``entropy`` and ``mc_variance`` use too, so regions of different sizes
compare). The inference computes it alongside the other scores (``PoolScores.bald``).
"""

from __future__ import annotations

import numpy as np

from activeseg.strategies.base import QueryContext, Strategy
from activeseg.strategies.registry import register


@register
class BaldStrategy(Strategy):
    name = "bald"

    def score(self, ctx: QueryContext) -> np.ndarray:
        return ctx.pool.bald
