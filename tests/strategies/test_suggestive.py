"""``suggestive``: Eq. 10's greedy max cover, exact on a hand-built case and against the plain greedy."""

from __future__ import annotations


import numpy as np
import pytest

from activeseg.core.config import ConfigError
from activeseg.model.inference import PoolScores
from activeseg.core.labels import LabelState
from activeseg.core.partition import Region
from activeseg.strategies import QueryContext, get_strategy
from activeseg.strategies.suggestive import greedy_cover, suggestive_order, unit_rows

# pool: three copies of e_x, two of e_y, one diagonal; rows 0, 3 and 5 are the most uncertain.
# Eq. 10 by hand: sums of cosines 3.707 (row 0), 2.707 (row 3), 4.536 (row 5): row 5 first; then
# gains 3 x 0.293 = 0.879 (row 0) and 2 x 0.293 = 0.586 (row 3): row 0; then row 3.
POOL = np.array([[1, 0], [1, 0], [1, 0], [0, 1], [0, 1], [1, 1]], dtype=float)
UNCERTAINTY = np.array([0.9, 0.1, 0.1, 0.8, 0.1, 0.7])
COSTS = np.full(6, 16)


def context(variance, descriptors, budget: int) -> QueryContext:
    """One 4 x 4n image cut into n disjoint 4 x 4 regions (16 pixels each)."""
    n = len(variance)
    regions = [Region("img", 0, 4 * i, 4, 4 * i + 4) for i in range(n)]
    pool = PoolScores([r.id for r in regions], np.zeros(n), np.asarray(variance, dtype=float), np.zeros(n),
                      np.asarray(descriptors, dtype=np.float32))
    return QueryContext(regions, budget, LabelState.empty({"img": (4, 4 * n)}), None, np.random.default_rng(0),
                        score_pool=lambda regs: pool)


def plain_greedy(descriptors, candidates, costs, budget) -> list[int]:
    """Eq. 10 with the whole similarity matrix, for reference."""
    Z = unit_rows(descriptors).astype(np.float64)
    sims = Z[candidates] @ Z.T
    best, alive, picks, left = np.full(len(Z), -1.0), costs[candidates] > 0, [], budget
    while True:
        alive &= costs[candidates] <= left
        if not alive.any():
            return picks
        gains = np.where(alive, np.maximum(sims - best, 0).sum(axis=1), -np.inf)
        k = int(np.argmax(gains))
        picks.append(int(candidates[k]))
        alive[k] = False
        left -= costs[candidates[k]]
        best = np.maximum(best, sims[k])


def test_hand_built_cover():
    assert suggestive_order(POOL, UNCERTAINTY, 3, COSTS, 32).tolist() == [5, 0]
    assert suggestive_order(POOL, UNCERTAINTY, 3, COSTS, 48).tolist() == [5, 0, 3]
    assert suggestive_order(POOL, UNCERTAINTY, 6, COSTS, 48).tolist() == [5, 0, 3]


def test_only_the_k_most_uncertain_are_candidates():
    assert suggestive_order(POOL, UNCERTAINTY, 2, COSTS, 48).tolist() == [0, 3]


def test_a_candidate_that_no_longer_fits_is_skipped():
    costs = np.array([16, 16, 16, 16, 16, 100])
    assert suggestive_order(POOL, UNCERTAINTY, 3, costs, 40).tolist() == [0, 3]


@pytest.mark.parametrize("block, max_cached", [(16384, 2**25), (37, 2**25), (64, 0), (50, 300)])
def test_lazy_blocked_cover_equals_the_plain_greedy(block, max_cached):
    rng = np.random.default_rng(0)
    for _ in range(4):
        D = np.maximum(rng.normal(size=(400, 12)), 0)
        candidates = rng.permutation(400)[:60]
        costs = rng.integers(1, 8, size=400)
        got = greedy_cover(D, candidates, costs, 90, block=block, max_cached=max_cached)
        assert got.tolist() == plain_greedy(D, candidates, costs, 90)
        assert costs[got].sum() <= 90


def test_strategy_spends_the_budget_on_the_cover():
    selection = get_strategy("suggestive", {"k_candidates": 3}).select(context(UNCERTAINTY, POOL, 48))
    assert selection.indices == [5, 0, 3]
    assert selection.spent == 48
    # default K = 4 x 2 affordable = 8 >= 6: the whole pool competes, same cover
    assert get_strategy("suggestive").select(context(UNCERTAINTY, POOL, 32)).indices == [5, 0]


def test_pixels_the_cover_leaves_go_by_uncertainty():
    selection = get_strategy("suggestive", {"k_candidates": 1}).select(context(UNCERTAINTY, POOL, 48))
    assert selection.indices == [0, 3, 5]


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError):
        get_strategy("suggestive", {"k_candidates": 0})
