"""``stochastic_batches``: stochastic batch querying (Gaillochet et al. 2023, Sect. 2) over any score.

The unlabeled pool is shuffled and cut into Q = floor(|U| / B) disjoint batches of B candidates (an
incomplete last batch is dropped, as the authors' code does); each batch is scored by the mean of its
members' per-sample scores (``aggregate: max`` or ``sum`` as options; with equal-sized batches ``sum``
ranks exactly as ``mean``) and the top batch is queried. Option ``n_batches``: instead, that many
batches of B drawn independently (with resampling: a candidate may fall in several batches; within a
batch, without replacement). The per-sample score is any score-based strategy (``base``: ``entropy``,
``mc_variance``, ``bald``, ``random``, ...), used with its default options.

Decisions the paper leaves open (its budget counts slices, ours counts pixels):
- B = ``batch_size`` if set, else the number of candidates of median cost the pixel budget buys
  (``affordable_count``: budget // median candidate cost, at least 1). If B > |U|, the one batch is
  the whole pool.
- The top batch, its members in descending score, goes through ``fill_budget``, so the pixel budget is
  never exceeded. Pixels it leaves over (overlapping or clipped patches cost less than the median) are
  spent on the next batches in descending batch score, then on candidates in no batch, by score.
- Each pick's reported score is its own per-sample score.
"""

from __future__ import annotations

import numpy as np

from activeseg.core.config import StochasticBatchesOptions
from activeseg.strategies.base import QueryContext, Selection, Strategy, affordable_count, fill_budget
from activeseg.strategies.registry import get_strategy, register

AGGREGATES = {"mean": np.mean, "max": np.max, "sum": np.sum}


def draw_batches(n: int, batch_size: int, rng: np.random.Generator, n_batches: int | None = None) -> np.ndarray:
    """(Q, B) candidate indices: floor(n / B) disjoint batches of a shuffled pool, or ``n_batches``
    batches drawn independently, each without replacement. B is capped at n."""
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    b = min(batch_size, n)
    if n_batches is None:
        q = n // b
        return rng.permutation(n)[: q * b].reshape(q, b)
    return np.stack([rng.choice(n, size=b, replace=False) for _ in range(n_batches)])


def batch_order(scores: np.ndarray, batches: np.ndarray, aggregate: str = "mean") -> np.ndarray:
    """(N,) order of all candidates: batches by descending aggregate score (ties: drawing order), each
    batch's members by descending score, a candidate listed once (its first batch); then candidates in
    no batch, by descending score. The top batch leads the order."""
    scores = np.asarray(scores, dtype=np.float64)
    batch_scores = AGGREGATES[aggregate](scores[batches], axis=1)
    batch_rank = np.empty(len(batches), np.int64)
    batch_rank[np.argsort(-batch_scores, kind="stable")] = np.arange(len(batches))
    members = batches.ravel()
    slot = np.tile(np.arange(batches.shape[1]), len(batches))
    ranked = members[np.lexsort((slot, -scores[members], np.repeat(batch_rank, batches.shape[1])))]
    _, first = np.unique(ranked, return_index=True)
    rest = np.setdiff1d(np.arange(len(scores)), members)
    return np.concatenate([ranked[np.sort(first)], rest[np.argsort(-scores[rest], kind="stable")]])


@register
class StochasticBatchesStrategy(Strategy):
    name = "stochastic_batches"

    Options = StochasticBatchesOptions

    def __init__(self, options: dict | None = None):
        super().__init__(options)
        self.base = get_strategy(self.options.base)

    def select(self, ctx: QueryContext) -> Selection:
        scores = np.asarray(self.base.score(ctx), dtype=np.float64)
        size = self.options.batch_size or affordable_count(ctx.costs, ctx.budget)
        if size == 0:
            return Selection([], [], [])
        batches = draw_batches(len(scores), size, ctx.rng, self.options.n_batches)
        order = batch_order(scores, batches, self.options.aggregate)
        picks, costs = fill_budget(order, ctx)
        return Selection(picks, [float(scores[i]) for i in picks], costs)
