"""``focannot``: cluster-instance double ranking (Lin et al. 2020, FocAnnot, Sect. 3.3, Algorithm 1).

Equations of the paper, and the function implementing each:
- IU, instance uncertainty (Eq. 2): the region's mean pixel entropy of the MC-averaged prediction
  (``PoolScores.entropy``; the paper leaves the reduction over pixels open, we take the mean).
- ID, instance diversity (Eq. 4): 2-Wasserstein between patch descriptors seen as 1-D distributions of
  their d values: ``pairwise_wasserstein2`` (sorted closed form), ``mean_wasserstein2``.
- Reweighted score (Eq. 5): S_n = H_n x mean of ID to the other candidates of the IU-refined set.
- Mini-batch k-means on the descriptors (scikit-learn ``MiniBatchKMeans``, seeded).
- CU (Eq. 6), CD (Eq. 7), importance with lambda (Eq. 8), normalised: ``cluster_importance``.
- Double ranking (Algorithm 1): ``double_ranking``; per-cluster counts by ``allocate``.

Variants (the paper's Table 1, patch-wise rows), option ``variant``:
``iu`` (4: patches + IU), ``iu_id`` (5: + ID, no clustering: one cluster), ``equal`` (6: clusters, equal
allocation), ``full`` (7: importance allocation, Eq. 8; the default).

Decisions the paper leaves open:
- ID's reference set. Eq. 5 weighs H_n by the "average diversity to other Q candidates", and Algorithm 1
  (line 10) computes S only inside the refined cluster K^(c'), the Q^(c) most uncertain patches of
  cluster c. So the reference set is the other candidates of the same refined set (neither the annotated
  patches nor the whole pool); with one cluster (``iu_id``) it is the other Q candidates, Eq. 5 verbatim.
  A refined set of one patch has nothing to compare to: its ID is 0 (it is then picked iff T^(c) = 1).
- Eq. 4 has no square root: it is the squared distance (summed). We use the squared distance too, in
  POT's convention (mean instead of sum: a constant factor d, no ranking changes). The mean of squared
  distances to a set has a closed form (``mean_wasserstein2``), so ID costs O(Q d) instead of O(Q^2 d).
- Counts: T^(c) = I^(c) T and Q^(c) = I^(c) Q are rounded by largest remainder so that they sum exactly
  to T (and Q), capped at the cluster's size, the excess redistributed over the other clusters in
  proportion to I^(c); Q^(c) is then raised to T^(c) where rounding left it below.
- T and the pixel budget (option ``t_from_budget``, default true): T = the number of candidates of
  median cost the budget buys (``affordable_count``) and Q = T x q_fraction / t_fraction (the paper's
  Q = 2T). With ``t_from_budget: false``, T and Q are the paper's fractions of the pool (2.5 %, 5 %).
  Either way the picks go through ``fill_budget``, so the budget is never exceeded: in proportional
  order (the j-th pick of cluster c at (j + 1/2) / T^(c), a Webster interleave, so a truncated list
  keeps the clusters' proportions), then, for pixels left over, the other candidates by IU.
- Each pick's reported score is its IU.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist
from sklearn.cluster import MiniBatchKMeans

from activeseg.core.config import FocAnnotOptions
from activeseg.strategies.base import QueryContext, Selection, Strategy, affordable_count, fill_budget
from activeseg.strategies.registry import register


def pairwise_wasserstein2(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """(n, m) squared 2-Wasserstein distances between the rows of X (n, d) and Y (m, d), each row a 1-D
    empirical distribution of its d values with uniform weights: POT's ``ot.wasserstein_1d(x, y, p=2)``,
    the mean squared difference of the sorted vectors. Eq. 4's minimum over permutations of the summed
    squared differences is reached by sorting both (1-D transport is monotone), so Eq. 4 = d x this.

    Each row is sorted once; then one ``cdist('sqeuclidean')`` gives every pair."""
    xs, ys = _sorted(X), _sorted(Y)
    if xs.shape[1] != ys.shape[1]:
        raise ValueError(f"descriptors of different lengths: {xs.shape[1]} and {ys.shape[1]}")
    return cdist(xs, ys, "sqeuclidean") / xs.shape[1]


def mean_wasserstein2(X: np.ndarray, Y: np.ndarray, exclude_self: bool = False) -> np.ndarray:
    """(n,) mean over the rows of Y (m, d) of ``pairwise_wasserstein2(X, Y)``, in O((n + m) d) time and
    memory: mean_j |a - b_j|^2 = |a|^2 - 2 a . mean_j b_j + mean_j |b_j|^2 on sorted rows.
    ``exclude_self``: X is Y and each row's distance to itself (0) is left out of its mean (m - 1 others);
    with a single row the mean over no other row is 0."""
    xs, ys = _sorted(X), _sorted(Y)
    m, d = ys.shape
    sq_x = np.einsum("ij,ij->i", xs, xs)
    total = m * sq_x - 2.0 * xs @ ys.sum(axis=0) + np.einsum("ij,ij->", ys, ys)
    total = np.maximum(total, 0.0) / d
    if exclude_self:
        return total / (m - 1) if m > 1 else np.zeros(len(xs))
    return total / m


def _sorted(X: np.ndarray) -> np.ndarray:
    return np.sort(np.asarray(X, dtype=np.float64), axis=1)


def cluster_importance(descriptors: np.ndarray, labels: np.ndarray, centroids: np.ndarray,
                       lam: float) -> np.ndarray:
    """(k,) normalised importance I^(c) (Eq. 8) of clusters 0..k-1, all non-empty, from
    CU (Eq. 6): mean |F_n - M_c|^2 over the cluster's members, and
    CD (Eq. 7): sum over the other centroids of |M_c - M_v|^2 / (k - 1) (0 with a single cluster).
    If every importance is 0, all clusters weigh the same."""
    M = np.asarray(centroids, dtype=np.float64)
    k = len(M)
    cu = np.array([_mean_squared_distance(descriptors[labels == c], M[c]) for c in range(k)])
    cd = cdist(M, M, "sqeuclidean").sum(axis=1) / (k - 1) if k > 1 else np.zeros(k)
    importance = lam * cu + (1.0 - lam) * cd
    total = importance.sum()
    return importance / total if total > 0 else np.full(k, 1.0 / k)


def allocate(weights: np.ndarray, total: int, capacity: np.ndarray) -> np.ndarray:
    """(k,) integer counts, summing exactly to ``total``, proportional to ``weights`` by largest
    remainder (ties: lower index), none above its ``capacity``: the excess of a capped cluster is
    redistributed over the others in proportion to their weights (evenly if they all weigh 0)."""
    weights = np.asarray(weights, dtype=np.float64)
    capacity = np.asarray(capacity, dtype=np.int64)
    if total > capacity.sum():
        raise ValueError(f"cannot allocate {total} among clusters of {capacity.sum()} members in all")
    counts = np.zeros(len(weights), np.int64)
    while (left := total - counts.sum()) > 0:
        room = counts < capacity
        w = np.where(room, weights, 0.0)
        w = w if w.sum() > 0 else room.astype(np.float64)
        share = left * w / w.sum()
        add = np.floor(share).astype(np.int64)
        remainder = np.where(room, share - add, -1.0)
        add[np.argsort(-remainder, kind="stable")[: left - add.sum()]] += 1
        counts += np.minimum(add, capacity - counts)
    return counts


def double_ranking(descriptors: np.ndarray, uncertainty: np.ndarray, n_clusters: int, q: int, t: int,
                   lam: float, seed: int, equal: bool = False) -> np.ndarray:
    """Algorithm 1 over (N, d) descriptors and (N,) instance uncertainties: the T selected row indices,
    in proportional order (see the module docstring). ``q`` (Q) and ``t`` (T) are counts; T is capped at
    N and Q is raised to at least T. ``equal``: every cluster weighs the same (Table 1, strategy 6)."""
    descriptors, H = np.asarray(descriptors), np.asarray(uncertainty, dtype=np.float64)
    t = min(t, len(H))
    q = min(max(q, t), len(H))
    if t <= 0:
        return np.zeros(0, np.int64)
    clusters = cluster(descriptors, n_clusters, seed)
    if equal:
        importance = np.full(len(clusters), 1.0 / len(clusters))
    else:
        labels, centroids = _relabel(clusters, len(H)), _centroids(descriptors, clusters)
        importance = cluster_importance(descriptors, labels, centroids, lam)
    sizes = np.array([len(m) for m in clusters])
    t_c = allocate(importance, t, sizes)
    q_c = np.maximum(allocate(importance, q, sizes), t_c)
    picks, keys = [], []
    for members, q_n, t_n in zip(clusters, q_c, t_c):
        if t_n == 0:
            continue
        refined = members[np.argsort(-H[members], kind="stable")[:q_n]]
        score = H[refined] * mean_wasserstein2(descriptors[refined], descriptors[refined], exclude_self=True)
        picks.append(refined[np.argsort(-score, kind="stable")[:t_n]])
        keys.append((np.arange(t_n) + 0.5) / t_n)
    picks, keys = np.concatenate(picks), np.concatenate(keys)
    return picks[np.argsort(keys, kind="stable")]


def cluster(descriptors: np.ndarray, n_clusters: int, seed: int) -> list[np.ndarray]:
    """Row indices of each non-empty cluster of seeded mini-batch k-means (one cluster if k = 1)."""
    n = len(descriptors)
    k = min(n_clusters, n)
    if k <= 1:
        return [np.arange(n)]
    km = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=1024)
    labels = km.fit_predict(np.asarray(descriptors, dtype=np.float32))
    return [np.flatnonzero(labels == c) for c in range(k) if np.any(labels == c)]


def _relabel(clusters: list[np.ndarray], n: int) -> np.ndarray:
    labels = np.empty(n, np.int64)
    for c, members in enumerate(clusters):
        labels[members] = c
    return labels


def _centroids(descriptors: np.ndarray, clusters: list[np.ndarray]) -> np.ndarray:
    """M_c, the members' mean (what k-means converges to; mini-batch centres lag slightly)."""
    return np.stack([descriptors[m].mean(axis=0, dtype=np.float64) for m in clusters])


def _mean_squared_distance(F: np.ndarray, centre: np.ndarray) -> float:
    """Mean over the rows of F (n, d) of |F_n - centre|^2, one row block at a time."""
    total = 0.0
    for start in range(0, len(F), 8192):
        diff = F[start : start + 8192] - centre
        total += float(np.einsum("ij,ij->", diff, diff))
    return total / len(F)


@register
class FocAnnotStrategy(Strategy):
    name = "focannot"

    Options = FocAnnotOptions

    def counts(self, ctx: QueryContext) -> tuple[int, int]:
        """(Q, T) for this round (see ``t_from_budget`` in the module docstring)."""
        o, n = self.options, len(ctx.candidates)
        if o.t_from_budget:
            t = affordable_count(ctx.costs, ctx.budget)
            return int(round(t * o.q_fraction / o.t_fraction)), t
        return max(1, int(round(o.q_fraction * n))), max(1, int(round(o.t_fraction * n)))

    def select(self, ctx: QueryContext) -> Selection:
        H = np.asarray(ctx.pool.entropy, dtype=np.float64)
        by_iu = np.argsort(-H, kind="stable")
        q, t = self.counts(ctx)
        o = self.options
        if o.variant == "iu" or t == 0:
            order = by_iu
        else:
            k = 1 if o.variant == "iu_id" else o.n_clusters
            seed = int(ctx.rng.integers(2**31))
            chosen = double_ranking(ctx.pool.descriptors, H, k, q, t, o.lam, seed, equal=o.variant == "equal")
            order = np.concatenate([chosen, by_iu[~np.isin(by_iu, chosen)]])
        picks, costs = fill_budget(order, ctx)
        return Selection(picks, [float(H[i]) for i in picks], costs)
