"""``random``: uniform random ranking of the candidates (the baseline every curve is read against)."""

from __future__ import annotations

import numpy as np

from activeseg.strategies.base import QueryContext, Strategy
from activeseg.strategies.registry import register


@register
class RandomStrategy(Strategy):
    name = "random"
    needs_model = False

    def score(self, ctx: QueryContext) -> np.ndarray:
        return ctx.rng.random(len(ctx.candidates))
