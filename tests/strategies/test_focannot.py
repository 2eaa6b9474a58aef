"""``focannot``: sorted 2-Wasserstein against POT, Eq. 6-8, the allocation, the double ranking, variants."""

from __future__ import annotations

import itertools

import numpy as np
import ot
import pytest

from activeseg.core.config import ConfigError
from activeseg.model.inference import PoolScores
from activeseg.core.labels import LabelState
from activeseg.core.partition import Region
from activeseg.strategies import QueryContext, get_strategy
from activeseg.strategies.focannot import (allocate, cluster, cluster_importance, double_ranking,
                                           mean_wasserstein2, pairwise_wasserstein2)


def context(entropy, descriptors, budget: int, seed: int = 0) -> QueryContext:
    """One 4 x 4n image cut into n disjoint 4 x 4 regions (16 pixels each)."""
    n = len(entropy)
    regions = [Region("img", 0, 4 * i, 4, 4 * i + 4) for i in range(n)]
    pool = PoolScores([r.id for r in regions], np.asarray(entropy, dtype=float), np.zeros(n), np.zeros(n),
                      np.asarray(descriptors, dtype=np.float32))
    return QueryContext(regions, budget, LabelState.empty({"img": (4, 4 * n)}), None, np.random.default_rng(seed),
                        score_pool=lambda regs: pool)


def three_clusters(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Rows 0-29 and 30-59: two tight clusters close together; rows 60-89: a sparse one, far away."""
    d = 8
    tight_a = np.full(d, 1.0) + 0.01 * rng.normal(size=(30, d))
    tight_b = np.full(d, 1.5) + 0.01 * rng.normal(size=(30, d))
    sparse = np.full(d, 10.0) + 1.0 * rng.normal(size=(30, d))
    return np.vstack([tight_a, tight_b, sparse]), rng.random(90)


def test_pairwise_wasserstein2_matches_pot():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(6, 32)), rng.gamma(2.0, size=(5, 32))
    W = pairwise_wasserstein2(X, Y)
    assert W.shape == (6, 5)
    d = X.shape[1]
    uniform = np.full(d, 1.0 / d)
    for i, j in itertools.product(range(6), range(5)):
        assert abs(W[i, j] - ot.wasserstein_1d(X[i], Y[j], p=2)) < 1e-9
        cost = (X[i][:, None] - Y[j][None, :]) ** 2
        assert abs(W[i, j] - ot.emd2(uniform, uniform, cost)) < 1e-9


def test_eq4_sum_over_the_best_permutation_is_d_times_the_distance():
    x, y = np.array([3.0, -1.0, 0.5, 2.0]), np.array([0.0, 4.0, 1.0, -2.0])
    eq4 = min(sum((x[m] - y[v[m]]) ** 2 for m in range(4)) for v in itertools.permutations(range(4)))
    assert pairwise_wasserstein2(x[None], y[None])[0, 0] * 4 == pytest.approx(eq4, abs=1e-12)


def test_mean_wasserstein2_closed_form_equals_the_mean_of_pairs():
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(7, 16)), rng.normal(size=(9, 16))
    assert np.allclose(mean_wasserstein2(X, Y), pairwise_wasserstein2(X, Y).mean(axis=1), rtol=1e-12, atol=1e-12)
    others = pairwise_wasserstein2(X, X).sum(axis=1) / 6
    assert np.allclose(mean_wasserstein2(X, X, exclude_self=True), others, rtol=1e-12, atol=1e-12)
    assert mean_wasserstein2(X[:1], X[:1], exclude_self=True).tolist() == [0.0]


def test_cluster_importance_by_hand():
    F = np.array([[0.0, 0.0], [2.0, 0.0], [10.0, 0.0], [10.0, 4.0]])
    labels = np.array([0, 0, 1, 1])
    M = np.array([[1.0, 0.0], [10.0, 2.0]])
    # CU = 1 and 4; CD = 81 + 4 = 85 for both; I = 0.5 CU + 0.5 CD = 43, 44.5
    assert np.allclose(cluster_importance(F, labels, M, 0.5), [43 / 87.5, 44.5 / 87.5])
    assert np.allclose(cluster_importance(F, labels, M, 1.0), [1 / 5, 4 / 5])


def test_allocate_by_largest_remainder():
    assert allocate([0.5, 0.3, 0.2], 7, [10, 10, 10]).tolist() == [4, 2, 1]  # 3.5, 2.1, 1.4


def test_allocate_redistributes_the_excess_of_a_full_cluster():
    # first pass 4, 2, 1; cluster 0 holds 2; the 2 left go 1.2 : 0.8 -> 1, 1
    assert allocate([0.5, 0.3, 0.2], 7, [2, 10, 10]).tolist() == [2, 3, 2]


def test_allocate_sums_exactly_and_respects_sizes():
    rng = np.random.default_rng(2)
    for _ in range(200):
        k = int(rng.integers(1, 7))
        capacity = rng.integers(0, 20, size=k)
        weights = rng.random(k) * (rng.random(k) > 0.3)
        total = int(rng.integers(0, capacity.sum() + 1))
        counts = allocate(weights, total, capacity)
        assert counts.sum() == total and np.all(counts <= capacity) and np.all(counts >= 0)


def test_allocate_refuses_more_than_the_clusters_hold():
    with pytest.raises(ValueError):
        allocate([1.0, 1.0], 5, [2, 2])


def test_clustering_is_seeded_and_finds_the_three_groups():
    F, _ = three_clusters(np.random.default_rng(3))
    groups = cluster(F, 3, seed=0)
    assert sorted(sorted(g.tolist()) for g in groups) == [list(range(0, 30)), list(range(30, 60)), list(range(60, 90))]
    assert [g.tolist() for g in groups] == [g.tolist() for g in cluster(F, 3, seed=0)]


def test_sparse_distant_cluster_gets_more_picks_than_tight_close_ones():
    F, H = three_clusters(np.random.default_rng(3))
    picks = double_ranking(F, H, n_clusters=3, q=18, t=9, lam=0.5, seed=0)
    per_cluster = np.bincount(picks // 30, minlength=3)
    assert len(picks) == 9 and len(set(picks.tolist())) == 9
    assert per_cluster[2] > per_cluster[0] and per_cluster[2] > per_cluster[1]
    equal = double_ranking(F, H, n_clusters=3, q=18, t=9, lam=0.5, seed=0, equal=True)
    assert np.bincount(equal // 30, minlength=3).tolist() == [3, 3, 3]


def test_instance_diversity_reweights_the_most_uncertain():
    # Q = 3 most uncertain: rows 0, 1, 2. Mean W2 to the two others: 12.5025, 12.255, 24.7525,
    # so S = H x ID = 11.252, 9.804, 17.327: row 2 first, then row 0 (plain IU would take 0, 1).
    F = np.array([[0.0, 0.0], [0.0, 0.1], [5.0, 5.0], [9.0, 1.0], [3.0, 3.0]])
    H = np.array([0.9, 0.8, 0.7, 0.1, 0.05])
    assert double_ranking(F, H, n_clusters=1, q=3, t=1, lam=0.5, seed=0).tolist() == [2]
    assert double_ranking(F, H, n_clusters=1, q=3, t=2, lam=0.5, seed=0).tolist() == [2, 0]


def test_picks_interleave_clusters_in_proportion():
    F, H = three_clusters(np.random.default_rng(3))
    picks = double_ranking(F, H, n_clusters=3, q=18, t=9, lam=0.5, seed=0)
    counts = np.bincount(picks // 30, minlength=3)
    for prefix in range(1, 10):  # every prefix keeps the clusters' shares within one pick
        seen = np.bincount(picks[:prefix] // 30, minlength=3)
        assert np.all(np.abs(seen - counts * prefix / 9) <= 1)


def test_strategy_full_variant_spends_the_budget_on_the_double_ranking():
    F, H = three_clusters(np.random.default_rng(3))
    selection = get_strategy("focannot").select(context(H, F, budget=9 * 16, seed=5))
    seed = int(np.random.default_rng(5).integers(2**31))
    expected = double_ranking(F.astype(np.float32), H, 3, 18, 9, 0.5, seed)  # T = 9 affordable, Q = 2T
    assert selection.indices == expected.tolist()
    assert selection.spent == 9 * 16


def test_strategy_iu_variant_is_top_entropy():
    H = np.array([0.2, 0.9, 0.4, 0.8])
    selection = get_strategy("focannot", {"variant": "iu"}).select(context(H, np.eye(4), budget=32))
    assert selection.indices == [1, 3]


def test_strategy_fractions_of_the_pool_then_fills_the_budget_by_iu():
    F, H = three_clusters(np.random.default_rng(3))
    options = {"t_from_budget": False, "variant": "iu_id"}  # T = round(0.025 x 90) = 2, Q = round(0.05 x 90) = 4
    selection = get_strategy("focannot", options).select(context(H, F, budget=5 * 16))
    first = double_ranking(F.astype(np.float32), H, 1, 4, 2, 0.5, 0).tolist()
    rest = [i for i in np.argsort(-H, kind="stable") if i not in first][:3]
    assert selection.indices == first + rest
    assert selection.spent == 80


def test_strategy_is_deterministic_by_seed():
    F, H = three_clusters(np.random.default_rng(4))
    strategy = get_strategy("focannot", {"variant": "equal"})
    assert strategy.select(context(H, F, 96, seed=1)).indices == strategy.select(context(H, F, 96, seed=1)).indices


@pytest.mark.parametrize("options", [{"variant": "all"}, {"lam": 1.5}, {"q_fraction": 0.01}, {"n_clusters": 0}])
def test_bad_options_are_config_errors(options):
    with pytest.raises(ConfigError):
        get_strategy("focannot", options)
