"""``powerbald``: stochastic power acquisition (Kirsch et al. 2023, "Stochastic Batch Acquisition";
baal's ``PowerSampling``) over any per-region score.

Instead of the top-scoring regions, regions are drawn without replacement with probability
proportional to score^beta (``beta`` > 0, 1 by default; beta -> infinity gives the top-k ranking; beta
-> 0 a random order, which is ``random``). The score is that of any registered per-region-score
strategy (``base``: ``bald`` by default, as PowerBALD; ``entropy``, ``mc_variance``, ``ripu``, ...),
with its default options.

Decisions the papers leave open:
- The draw is the Gumbel-top-k form of sequential sampling without replacement (as Kirsch et al.):
  regions in descending beta * log(score) + Gumbel(0, 1) noise, the noise drawn from the query
  context's generator (seeded by the campaign seed and the round), so a seed fixes the selection.
- Scores <= 0 (BALD's round-off below 0) have probability 0: they come after every positive one, in
  candidate order.
- The drawn order goes through the usual budget walk (``fill_budget``): regions are taken in drawing
  order while their new pixels fit the round's budget. Each pick's reported score is its base score.
"""

from __future__ import annotations

import numpy as np

from activeseg.core.config import PowerBaldOptions
from activeseg.strategies.base import QueryContext, Selection, Strategy, fill_budget
from activeseg.strategies.registry import get_strategy, register


def power_order(scores: np.ndarray, beta: float, rng: np.random.Generator) -> np.ndarray:
    """(N,) candidate indices in the order of a draw without replacement with P(i) proportional to
    scores[i] ** beta (Gumbel-top-k: descending beta * log(score) + Gumbel noise)."""
    scores = np.asarray(scores, dtype=np.float64)
    with np.errstate(divide="ignore"):
        keys = beta * np.log(np.clip(scores, 0, None)) + rng.gumbel(size=len(scores))
    return np.argsort(-keys, kind="stable")


@register
class PowerBaldStrategy(Strategy):
    name = "powerbald"

    Options = PowerBaldOptions

    def __init__(self, options: dict | None = None):
        super().__init__(options)
        self.base = get_strategy(self.options.base)

    def select(self, ctx: QueryContext) -> Selection:
        scores = np.asarray(self.base.score(ctx), dtype=np.float64)
        picks, costs = fill_budget(power_order(scores, self.options.beta, ctx.rng), ctx)
        return Selection(picks, [float(scores[i]) for i in picks], costs)
