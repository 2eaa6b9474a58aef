"""Representativeness: the shared machinery of ``typiclust``, ``maxherding`` and ``coverage_then_uncertainty``.

Pure numpy / scikit-learn functions over region embeddings, and the two steps that tie them to a query:
``embeddings`` (the candidates' and the labeled regions' vectors) and ``select_in_order`` (an order of
picks to a :class:`Selection` within the pixel budget).

- TypiClust (Hacohen et al. 2022, "Active learning on a budget"; avihu111/TypiClust,
  ``deep-al/pycls/al/typiclust.py``): ``typiclust_order``, with ``typicality``.
- MaxHerding (Bae et al. 2024, "Generalized coverage for more robust low-budget active learning", ECCV;
  BorealisAI/uherding, ``deep-al/pycls/al/herding.py``): ``maxherding_order``, with ``rbf`` and ``coverage``.
- The generalised coverage MaxHerding maximises, the switch's measure: ``mean_coverage``.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans
from sklearn.neighbors import NearestNeighbors

from activeseg.strategies.base import QueryContext, Selection, Strategy, affordable_count, fill_budget
from activeseg.strategies.coreset import BLOCK, labeled_descriptors, labeled_regions, nearest_distance, squared_to

MAX_CLUSTERS = 500  # TypiClust's cap on K (the reference's MAX_NUM_CLUSTERS)
EPS = 1e-5  # keeps typicality finite for duplicate embeddings (the reference's constant)


def normalise(X: np.ndarray) -> np.ndarray:
    """(N, d) rows of X (N, d) divided by their L2 norm; an all-zero row stays zero."""
    X = np.asarray(X, dtype=np.float64)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(norms, np.finfo(np.float64).tiny)


def embeddings(ctx: QueryContext) -> tuple[np.ndarray, np.ndarray]:
    """(candidates (N, d), labeled (M, d)), both L2-normalised: the vectors of ``ctx.candidates`` and of the
    labeled regions (the training pool's regions with every pixel revealed). From the pretrained encoder's
    ``extras["pool_embeddings"]`` (region id -> (d,)) when given, else the round's model descriptors."""
    table = ctx.extras.get("pool_embeddings")
    if not table:
        return normalise(ctx.pool.descriptors), normalise(labeled_descriptors(ctx))
    candidates = np.stack([np.asarray(table[r.id]) for r in ctx.candidates])
    labeled = np.array([table[r.id] for r in labeled_regions(ctx)]).reshape(-1, candidates.shape[1])
    return normalise(candidates), normalise(labeled)


def typicality(X: np.ndarray, neighbours: int) -> np.ndarray:
    """(n,) TypiClust's typicality of each row of X (n, d) among the others:
    Typicality(x) = 1 / ((1/k) sum_{x_i in kNN(x)} |x - x_i|_2), with k = min(neighbours, n // 2)
    (+ ``EPS`` in the denominator, as the reference); 0 for a lone row (no neighbour)."""
    k = min(neighbours, len(X) // 2)
    if k == 0:
        return np.zeros(len(X))
    distances, _ = NearestNeighbors(n_neighbors=k).fit(X).kneighbors()
    return 1.0 / (distances.mean(axis=1) + EPS)


def typiclust_order(candidates: np.ndarray, labeled: np.ndarray, count: int, seed: int,
                    min_cluster_size: int = 5, neighbours: int = 20) -> np.ndarray:
    """TypiClust's picks among ``candidates`` (N, d) given the ``labeled`` embeddings (M, d): the first
    ``min(count, N)`` candidate indices, in pick order.

    K-means (seeded by ``seed``) over labeled and candidates with K = M + count clusters, at most the number
    of distinct points and 500; clusters of at most ``min_cluster_size`` points are visited only once every
    other cluster has no candidate left (so if all are that small, all are kept). Each pick visits the
    cluster with the fewest labeled points (picks count as labeled), then the largest, then the lowest
    cluster id, and takes its candidate of highest ``typicality`` among the cluster's candidates not yet
    picked."""
    count = min(count, len(candidates))
    if count == 0:
        return np.zeros(0, np.int64)
    points = np.vstack([labeled, candidates])
    k = min(len(labeled) + count, len(np.unique(points, axis=0)), MAX_CLUSTERS)
    clusters = KMeans(n_clusters=k, n_init=1, random_state=seed).fit_predict(points)
    sizes = np.bincount(clusters, minlength=k)
    labeled_in = np.bincount(clusters[: len(labeled)], minlength=k)
    small = sizes <= min_cluster_size
    home = clusters[len(labeled):]
    free = np.ones(len(candidates), bool)
    picks = []
    for _ in range(count):
        c = min(np.unique(home[free]), key=lambda c: (small[c], labeled_in[c], -sizes[c], c))
        members = np.flatnonzero(free & (home == c))
        best = int(members[np.argmax(typicality(candidates[members], neighbours))])
        picks.append(best)
        free[best] = False
        labeled_in[c] += 1
    return np.array(picks, np.int64)


def rbf(X: np.ndarray, Y: np.ndarray, bandwidth: float) -> np.ndarray:
    """(n, m) float32 RBF kernel k(x, y) = exp(-|x - y|^2 / (2 bandwidth^2)) between X (n, d) and Y (m, d),
    computed ``BLOCK`` rows at a time."""
    X, Y = np.asarray(X, np.float64), np.asarray(Y, np.float64)
    sq = np.einsum("ij,ij->i", X, X)
    K = np.empty((len(X), len(Y)), np.float32)
    for i in range(0, len(X), BLOCK):
        K[i : i + BLOCK] = np.exp(-squared_to(X[i : i + BLOCK], sq[i : i + BLOCK], Y) / (2 * bandwidth**2))
    return K


def coverage(pool: np.ndarray, labeled: np.ndarray, bandwidth: float) -> np.ndarray:
    """(P,) c_i = max_{l in labeled} k(x_i, x_l) for each row of ``pool`` (P, d), with the RBF kernel of
    ``rbf`` (the nearest labeled row gives the largest value); 0 without labeled rows."""
    return np.exp(-nearest_distance(pool, labeled) ** 2 / (2 * bandwidth**2))


def mean_coverage(pool: np.ndarray, labeled: np.ndarray, bandwidth: float) -> float:
    """The generalised coverage of ``pool`` (P, d) by ``labeled`` (M, d), MaxHerding's objective:
    GCov = (1/P) sum_i max_{l in labeled} k(x_i, x_l), in [0, 1]; 1 for a labeled point itself, 0 without
    labeled rows."""
    return float(coverage(pool, labeled, bandwidth).mean())


def maxherding_order(candidates: np.ndarray, labeled: np.ndarray, count: int,
                     bandwidth: float) -> np.ndarray:
    """MaxHerding's greedy picks among ``candidates`` (N, d) given ``labeled`` (M, d): the first
    ``min(count, N)`` candidate indices, in pick order.

    Over the pool P = labeled + candidates, c_i = max_{l in labeled} k(x_i, x_l) (``coverage``); each step
    takes x* = argmax over unpicked candidates x of sum_{i in P} max(k(x_i, x) - c_i, 0) (ties: lower
    index), the gain of GCov times P, then c_i <- max(c_i, k(x_i, x*)). Memory: the (M + N, N) float32
    kernel and one step's temporary of that size, 8 (M + N) N bytes: 3.2 GB at M + N = N = 20 000."""
    pool = np.vstack([labeled, candidates])
    kernel = rbf(pool, candidates, bandwidth)
    covered = coverage(pool, labeled, bandwidth).astype(np.float32)
    free = np.ones(len(candidates), bool)
    picks = []
    for _ in range(min(count, len(candidates))):
        excess = kernel - covered[:, None]
        gain = np.maximum(excess, 0.0, out=excess).sum(axis=0, dtype=np.float64)
        best = int(np.argmax(np.where(free, gain, -np.inf)))
        picks.append(best)
        free[best] = False
        np.maximum(covered, kernel[:, best], out=covered)
    return np.array(picks, np.int64)


def complete(picks: np.ndarray, candidates: np.ndarray, labeled: np.ndarray) -> np.ndarray:
    """(N,) order of all candidates: ``picks``, then the other candidates farthest first (Euclidean) from
    their nearest labeled or picked embedding, ties by lower index; the least covered come first."""
    dist = nearest_distance(candidates, np.vstack([labeled, candidates[picks]]))
    rest = np.argsort(-dist, kind="stable")
    return np.concatenate([picks, rest[~np.isin(rest, picks)]]).astype(np.int64)


def select_in_order(ctx: QueryContext, picks: np.ndarray, candidates: np.ndarray, labeled: np.ndarray
                    ) -> Selection:
    """The selection of ``picks`` (indices into ``ctx.candidates``, in pick order) within the pixel budget,
    pixels left over going to the other candidates in the order of ``complete``. Scores rank the picks:
    the first of B picks scores B, the last 1; a candidate taken only for left-over pixels scores 0."""
    chosen, costs = fill_budget(complete(picks, candidates, labeled), ctx)
    rank = {int(i): float(len(picks) - k) for k, i in enumerate(picks)}
    return Selection(chosen, [rank.get(i, 0.0) for i in chosen], costs)


class RepresentativeStrategy(Strategy):
    """Base of ``typiclust`` and ``maxherding``: as many picks as the pixel budget buys at the median cost
    (``affordable_count``), in the order :meth:`order` gives over the embeddings, then ``select_in_order``."""

    def order(self, ctx: QueryContext, candidates: np.ndarray, labeled: np.ndarray, count: int) -> np.ndarray:
        """The first ``count`` picks, indices into ``candidates`` (N, d), given ``labeled`` (M, d)."""
        raise NotImplementedError(f"{type(self).__name__} must define order()")

    def select(self, ctx: QueryContext) -> Selection:
        count = affordable_count(ctx.costs, ctx.budget)
        if count == 0:
            return Selection([], [], [])
        candidates, labeled = embeddings(ctx)
        return select_in_order(ctx, self.order(ctx, candidates, labeled, count), candidates, labeled)
