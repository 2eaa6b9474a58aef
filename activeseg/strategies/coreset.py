"""``coreset``: k-center greedy over descriptors (Sener and Savarese 2018), the diversity baseline.

The centres start as the labeled regions' descriptors; the candidate farthest (Euclidean) from its
nearest centre is added, becomes a centre, and so on until the pixel budget is spent.

Decisions the paper leaves open:
- Labeled regions: the training pool's regions (``pool_regions`` of the train split at the configured
  granularity) with every pixel revealed. Their descriptors come from the round's model, one
  deterministic pass (``mc_dropout_scores`` with ``passes=1``; the descriptor does not depend on
  dropout: the encoder has none). Partly revealed regions are still candidates and not centres.
- No labeled region at all (nothing fully revealed): the first pick is the candidate farthest from the
  candidates' mean, a deterministic start.
- Pixel budget: the greedy walk charges each candidate its cost taken alone (an upper bound of what it
  reveals after overlapping picks) and skips those that no longer fit; ``fill_budget`` then takes every
  greedy pick, and the pixels the overlaps saved go to the remaining candidates, farthest first from
  the final centres. Ties go to the lower candidate index.
- Each pick's reported score is its distance to the nearest centre when it was picked.
"""

from __future__ import annotations

import numpy as np

from activeseg.model.inference import mc_dropout_scores
from activeseg.core.partition import Region
from activeseg.core.pool import pool_regions
from activeseg.strategies.base import QueryContext, Selection, Strategy, fill_budget
from activeseg.strategies.registry import register

BLOCK = 2048


def _floats(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X)
    return X if X.dtype in (np.float32, np.float64) else X.astype(np.float64)


def squared_to(X: np.ndarray, sq: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """(n, m) squared Euclidean distances from X (n, d), whose squared norms are ``sq`` (n,), to Y (m, d),
    as |x|^2 - 2 x.y + |y|^2 (clamped at 0)."""
    d2 = sq[:, None] - 2.0 * (X @ Y.T) + np.einsum("ij,ij->i", Y, Y, dtype=np.float64)[None, :]
    return np.maximum(d2, 0.0)


def nearest_distance(X: np.ndarray, centres: np.ndarray, block: int = BLOCK) -> np.ndarray:
    """(N,) Euclidean distance of each row of X (N, d) to its nearest row of ``centres`` (M, d); blocks of
    ``block`` rows of each keep memory at O(block^2); +inf where there is no centre."""
    X, C = _floats(X), _floats(centres)
    sq = np.einsum("ij,ij->i", X, X, dtype=np.float64)
    nearest = np.full(len(X), np.inf)
    for i in range(0, len(X), block):
        for j in range(0, len(C), block):
            d2 = squared_to(X[i : i + block], sq[i : i + block], C[j : j + block]).min(axis=1)
            np.minimum(nearest[i : i + block], d2, out=nearest[i : i + block])
    return np.sqrt(nearest)


def k_center_greedy(descriptors: np.ndarray, centres: np.ndarray, costs: np.ndarray,
                    budget: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy k-center over candidate ``descriptors`` (N, d) given labeled ``centres`` (M, d), each pick
    charged ``costs[i]`` out of ``budget`` (unaffordable or zero-cost candidates skipped; ties: lower
    index). Returns the picks in order, each pick's distance to its nearest centre when picked, and
    every candidate's final nearest-centre distance (N,). Without centres, the first pick is the
    candidate farthest from the candidates' mean (its reported distance is to that mean)."""
    X = _floats(descriptors)
    sq = np.einsum("ij,ij->i", X, X, dtype=np.float64)
    cost = np.asarray(costs, dtype=np.int64)
    seeded = len(centres) > 0
    dist = nearest_distance(X, centres) if seeded else np.linalg.norm(X - X.mean(axis=0), axis=1)
    alive = cost > 0
    picks, at_pick, left = [], [], int(budget)
    while True:
        alive &= cost <= left
        if not alive.any():
            break
        pick = int(np.argmax(np.where(alive, dist, -np.inf)))
        picks.append(pick)
        at_pick.append(float(dist[pick]))
        alive[pick] = False
        left -= int(cost[pick])
        to_pick = np.sqrt(np.maximum(sq - 2.0 * (X @ X[pick]) + sq[pick], 0.0))
        dist = np.minimum(dist, to_pick) if seeded else to_pick
        seeded = True
    return np.array(picks, dtype=np.int64), np.array(at_pick), dist


def _require(ctx: QueryContext, keys: tuple[str, ...], purpose: str) -> None:
    missing = [k for k in keys if k not in ctx.extras]
    if missing:
        raise RuntimeError(f"{purpose} needs the query context's extras {missing}")


def labeled_regions(ctx: QueryContext) -> list[Region]:
    """The training pool's regions with every pixel revealed."""
    _require(ctx, ("cfg", "split"), "listing the labeled regions")
    regions = pool_regions(ctx.dataset, ctx.extras["split"]["train"], ctx.extras["cfg"])
    return [r for r in regions if ctx.state.new_pixels(r) == 0]


def labeled_descriptors(ctx: QueryContext) -> np.ndarray:
    """(M, d) descriptors of the labeled regions, from the round's model."""
    _require(ctx, ("model", "device", "cfg", "split"), "describing the labeled regions with the round's model")
    regions = labeled_regions(ctx)
    if not regions:
        return np.zeros((0, ctx.pool.descriptors.shape[1]))
    scores = mc_dropout_scores(ctx.extras["model"], ctx.dataset, regions, 1, ctx.extras["cfg"].query.batch_size,
                               ctx.extras["device"])
    return scores.descriptors


@register
class CoresetStrategy(Strategy):
    name = "coreset"

    def select(self, ctx: QueryContext) -> Selection:
        picks, at_pick, dist = k_center_greedy(ctx.pool.descriptors, labeled_descriptors(ctx), ctx.costs, ctx.budget)
        farthest = np.argsort(-dist, kind="stable")
        order = np.concatenate([picks, farthest[~np.isin(farthest, picks)]])
        chosen, costs = fill_budget(order, ctx)
        score = dict(zip(picks.tolist(), at_pick.tolist()))
        return Selection(chosen, [score.get(i, float(dist[i])) for i in chosen], costs)
