"""``suggestive``: suggestive annotation (Yang et al. 2017), the BSQ paper's baseline (Eq. 9-10).

Ozdemir et al. 2021, Sect. 2.4 (FCN_Baseline):

1. Uncertainty: MC-dropout variance (``PoolScores.variance``: per-pixel variance across T passes, mean
   over classes, mean over the region's pixels), as the BSQ baseline does. Yang et al.'s bootstrapped
   ensemble of FCNs is not implemented (it would train several models per round).
2. S_unc: the K most uncertain candidates (option ``k_candidates``; default 4x the number of candidates
   of median cost the pixel budget buys, ``affordable_count``).
3. Similarity (Eq. 9): cosine of the descriptors (the bottleneck's channel-wise mean, the paper's
   "image descriptor"); an all-zero descriptor has similarity 0 to everything.
4. Greedy maximum cover (Eq. 10) of the WHOLE unlabeled pool X_non: repeatedly add the x in
   S_unc \\ S_rep maximising F(S_rep + x), F(S) = sum over the pool of max_{s in S} sim(s, x), until the
   pixel budget is spent: candidates whose cost exceeds what is left are skipped, ties go to the more
   uncertain candidate.

Decisions the paper leaves open, and the computation:
- F of the empty set: each pool member counts -1 (the lowest cosine), so every greedy step maximises
  Eq. 10 exactly (the first pick maximises the plain sum of similarities). With best[x] = the running
  max_{s in S} sim(s, x), the gain of adding k is sum_x max(0, sim(k, x) - best[x]).
- At patch scale the K x N similarity matrix does not fit, so it is never held: the first gains have
  a closed form (sum_x sim(k, x) + N = z_k . sum_x z_x + N on unit vectors), later gains are evaluated
  lazily (Minoux's lazy greedy, exact since F is submodular: a gain never grows, so a stale gain
  bounds the fresh one; a candidate is picked once its fresh gain beats every stale bound). A full
  evaluation is one pass over the pool in blocks of rows, memory O(batch x block); it keeps, while a
  memory cap allows, the pool entries that can still add to the candidate's gain, so most
  re-evaluations and updates touch only those (``CoverState``). Memory: O(N d) for the unit
  descriptors, O(batch x block) for a pass, at most ``MAX_CACHED`` kept entries (256 MiB). The picks
  are those of the plain greedy (up to float32 rounding of near-ties).
- Pixel budget: the greedy walk charges each candidate its cost taken alone (an upper bound of what it
  reveals after overlapping picks), so ``fill_budget`` then takes every greedy pick; the pixels the
  overlaps saved go to the remaining candidates by uncertainty.
- Each pick's reported score is its uncertainty.
"""

from __future__ import annotations


import numpy as np

from activeseg.core.config import SuggestiveOptions
from activeseg.strategies.base import QueryContext, Selection, Strategy, affordable_count, fill_budget
from activeseg.strategies.registry import register

BATCH = 32
MAX_BATCH = 256
BLOCK = 16384
MAX_CACHED = 2**25


def unit_rows(descriptors: np.ndarray) -> np.ndarray:
    """(N, d) float32 rows scaled to unit length (all-zero rows stay zero), so dot products are cosines."""
    Z = np.asarray(descriptors, dtype=np.float32)
    norms = np.linalg.norm(Z, axis=1, keepdims=True)
    return np.divide(Z, norms, out=np.zeros_like(Z), where=norms > 0)


class CoverState:
    """The greedy cover's running state over the unit-row pool Z (N, d): best[x] = max_{s in S} sim(s, x)
    (-1 for the empty S), and, per evaluated candidate, the pool entries that can still add to its gain.

    An entry x with sim(k, x) <= best[x] never contributes again (best only grows), so a full pass over
    the pool keeps, per candidate, the list of (x, sim(k, x)) with sim(k, x) > best[x] while all lists
    together hold at most ``max_cached`` entries (8 bytes each); a list shrinks at each re-evaluation. A
    candidate with a list is re-evaluated in O(len(list)) instead of O(N d), and adding it to S updates
    only its list's entries."""

    def __init__(self, Z: np.ndarray, block: int = BLOCK, max_cached: int = MAX_CACHED):
        self.Z, self.block, self.max_cached = Z, block, max_cached
        self.best = np.full(len(Z), -1.0, np.float32)
        self.kept: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.cached = 0

    def gains(self, rows: np.ndarray) -> np.ndarray:
        """(b,) exact gains sum_x max(0, sim(k, x) - best[x]) of pool rows ``rows``."""
        out = np.zeros(len(rows))
        listed = np.array([int(r) in self.kept for r in rows], dtype=bool)
        for i in np.flatnonzero(listed):
            out[i] = self._listed_gain(int(rows[i]))
        if not listed.all():
            out[~listed] = self._full_gains(np.asarray(rows)[~listed])
        return out

    def _listed_gain(self, r: int) -> float:
        idx, sims = self.kept[r]
        excess = sims - self.best[idx]
        keep = excess > 0
        self.cached -= len(idx) - int(keep.sum())
        self.kept[r] = (idx[keep], sims[keep])
        return float(excess[keep].sum(dtype=np.float64))

    def _full_gains(self, rows: np.ndarray) -> np.ndarray:
        """One blocked pass over the pool, memory O(len(rows) x block); keeps, in order, the lists that
        fit in what ``max_cached`` leaves (a list that would overflow is dropped as soon as it does)."""
        gains = np.zeros(len(rows))
        parts: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in rows]
        sizes = np.zeros(len(rows), np.int64)
        collecting = np.ones(len(rows), bool)
        room = self.max_cached - self.cached
        Zr = self.Z[rows]
        for start in range(0, len(self.Z), self.block):
            sims = Zr @ self.Z[start : start + self.block].T
            excess = np.maximum(sims - self.best[start : start + self.block], 0.0)
            gains += excess.sum(axis=1, dtype=np.float64)
            for i in np.flatnonzero(collecting):
                hit = np.flatnonzero(excess[i])
                sizes[i] += len(hit)
                parts[i].append(((hit + start).astype(np.int32), sims[i, hit]))
            overflow = collecting & (np.cumsum(np.where(collecting, sizes, 0)) > room)
            for i in np.flatnonzero(overflow):
                parts[i] = []
            collecting &= ~overflow
        for i in np.flatnonzero(collecting):
            idx, sims = zip(*parts[i])
            self.kept[int(rows[i])] = (np.concatenate(idx), np.concatenate(sims))
            self.cached += int(sizes[i])
        return gains

    def add(self, r: int) -> None:
        """Add pool row ``r`` to S: best[x] = max(best[x], sim(r, x))."""
        if r in self.kept:
            idx, sims = self.kept.pop(r)
            self.cached -= len(idx)
            self.best[idx] = sims  # a list holds only entries above best, each x once
        else:
            np.maximum(self.best, self.Z @ self.Z[r], out=self.best)


def greedy_cover(descriptors: np.ndarray, candidates: np.ndarray, costs: np.ndarray, budget: int,
                 block: int = BLOCK, max_cached: int = MAX_CACHED) -> np.ndarray:
    """Eq. 10's greedy maximum cover of all N rows of ``descriptors`` (N, d) by ``candidates`` (row
    indices; ties go to the earlier one), each charged ``costs[row]`` out of ``budget`` (unaffordable or
    zero-cost ones skipped). Returns the picked rows in greedy order. Lazy greedy over a ``CoverState``
    (see the module docstring): each step re-evaluates the stale candidates of highest bound, 32 at
    first, twice as many each time the step needs more (at most 256)."""
    Z = unit_rows(descriptors)
    candidates = np.asarray(candidates, dtype=np.int64)
    cost = np.asarray(costs, dtype=np.int64)[candidates]
    state = CoverState(Z, block, max_cached)
    bound = Z[candidates].astype(np.float64) @ Z.sum(axis=0, dtype=np.float64) + len(Z)
    alive = cost > 0
    picks, left = [], int(budget)
    while True:
        alive &= cost <= left
        if not alive.any():
            break
        fresh = np.full(len(candidates), not picks)  # the closed-form first gains are exact
        batch = BATCH
        while True:
            stale = np.flatnonzero(alive & ~fresh)
            done = np.flatnonzero(alive & fresh)
            top = done[np.argmax(bound[done])] if done.size else -1
            if top >= 0 and (stale.size == 0 or bound[top] > bound[stale].max()):
                break
            stale = stale[np.argsort(-bound[stale], kind="stable")[:batch]]
            bound[stale] = state.gains(candidates[stale])
            fresh[stale] = True
            batch = min(2 * batch, MAX_BATCH)
        picks.append(int(candidates[top]))
        alive[top] = False
        left -= int(cost[top])
        state.add(int(candidates[top]))
    return np.array(picks, dtype=np.int64)


def suggestive_order(descriptors: np.ndarray, uncertainty: np.ndarray, k: int, costs: np.ndarray,
                     budget: int) -> np.ndarray:
    """S_unc = the ``k`` most uncertain rows (ties: lower index), then ``greedy_cover`` of the whole pool
    within the budget. Returns the picked rows in greedy order."""
    unc = np.argsort(-np.asarray(uncertainty, dtype=np.float64), kind="stable")[:k]
    return greedy_cover(descriptors, unc, costs, budget)


@register
class SuggestiveStrategy(Strategy):
    name = "suggestive"

    Options = SuggestiveOptions

    def select(self, ctx: QueryContext) -> Selection:
        unc = np.asarray(ctx.pool.variance, dtype=np.float64)
        k = self.options.k_candidates or 4 * affordable_count(ctx.costs, ctx.budget)
        picks = suggestive_order(ctx.pool.descriptors, unc, k, ctx.costs, ctx.budget)
        by_unc = np.argsort(-unc, kind="stable")
        order = np.concatenate([picks, by_unc[~np.isin(by_unc, picks)]])
        chosen, costs = fill_budget(order, ctx)
        return Selection(chosen, [float(unc[i]) for i in chosen], costs)
