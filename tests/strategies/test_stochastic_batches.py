"""``stochastic_batches``: batch drawing, batch ranking, B = 1 equals top-1, budgets, determinism."""

from __future__ import annotations


import numpy as np
import pytest

from activeseg.core.config import ConfigError
from activeseg.model.inference import PoolScores
from activeseg.core.labels import LabelState
from activeseg.core.partition import Region
from activeseg.strategies import QueryContext, get_strategy
from activeseg.strategies.base import affordable_count
from activeseg.strategies.stochastic_batches import batch_order, draw_batches


def context(entropy, budget: int, seed: int = 0, bald=None) -> QueryContext:
    """One 4 x 4n image cut into n disjoint 4 x 4 regions (16 pixels each)."""
    n = len(entropy)
    regions = [Region("img", 0, 4 * i, 4, 4 * i + 4) for i in range(n)]
    bald = np.zeros(n) if bald is None else np.asarray(bald, dtype=float)
    pool = PoolScores([r.id for r in regions], np.asarray(entropy, dtype=float), np.zeros(n), bald, np.zeros((n, 2)))
    return QueryContext(regions, budget, LabelState.empty({"img": (4, 4 * n)}), None, np.random.default_rng(seed),
                        score_pool=lambda regs: pool)


def test_disjoint_batches_cover_floor_n_over_b_batches_and_drop_the_rest():
    batches = draw_batches(10, 3, np.random.default_rng(0))
    assert batches.shape == (3, 3)
    assert len(np.unique(batches)) == 9
    assert np.array_equal(batches, draw_batches(10, 3, np.random.default_rng(0)))


def test_resampled_batches_are_each_without_replacement():
    batches = draw_batches(6, 4, np.random.default_rng(1), n_batches=20)
    assert batches.shape == (20, 4)
    assert all(len(set(b)) == 4 for b in batches)
    assert len(np.unique(batches)) == 6  # 20 draws of 4 out of 6 reach every candidate


def test_a_batch_larger_than_the_pool_is_the_whole_pool():
    assert sorted(draw_batches(3, 5, np.random.default_rng(0))[0]) == [0, 1, 2]


def test_batch_order_mean_and_max():
    scores = np.array([0.9, 0.1, 0.2, 0.7, 0.5, 0.4])
    batches = np.array([[0, 1], [3, 4], [2, 5]])  # means 0.5, 0.6, 0.3; maxima 0.9, 0.7, 0.4
    assert batch_order(scores, batches, "mean").tolist() == [3, 4, 0, 1, 5, 2]
    assert batch_order(scores, batches, "max").tolist() == [0, 1, 3, 4, 5, 2]
    assert batch_order(scores, batches, "sum").tolist() == [3, 4, 0, 1, 5, 2]


def test_candidates_outside_every_batch_come_last_by_score():
    order = batch_order(np.array([0.1, 0.2, 0.9, 0.5]), np.array([[1, 0]]))
    assert order.tolist() == [1, 0, 2, 3]


def test_resampled_candidates_are_listed_once():
    order = batch_order(np.array([0.3, 0.2, 0.1]), np.array([[0, 1], [0, 2]]))
    assert order.tolist() == [0, 1, 2]


def test_batch_size_is_what_the_budget_buys_at_the_median_cost():
    assert affordable_count(np.array([16, 16, 4, 100, 0]), 40) == 2  # median of 4, 16, 16, 100 is 16
    assert affordable_count(np.array([16, 16]), 10) == 1
    assert affordable_count(np.array([0, 0]), 10) == 0


def test_batch_size_one_equals_top_one_of_the_base_score():
    scores = np.random.default_rng(3).random(50)
    for seed in range(5):
        ctx = context(scores, budget=16, seed=seed)  # one region affordable: B = 1
        selection = get_strategy("stochastic_batches").select(ctx)
        assert selection.indices == [int(np.argmax(scores))]
        batches = draw_batches(50, 1, np.random.default_rng(seed))
        assert np.array_equal(batch_order(scores, batches), np.argsort(-scores, kind="stable"))


def test_the_top_batch_spends_the_budget_exactly():
    scores = np.random.default_rng(4).random(20)
    selection = get_strategy("stochastic_batches").select(context(scores, budget=48, seed=7))
    batches = draw_batches(20, 3, np.random.default_rng(7))  # B = 48 // 16
    top = batches[np.argmax(scores[batches].mean(axis=1))]
    assert sorted(selection.indices) == sorted(top.tolist())
    assert selection.spent == 48
    assert selection.scores == sorted(selection.scores, reverse=True)


def test_deterministic_by_seed():
    scores = np.random.default_rng(5).random(30)
    strategy = get_strategy("stochastic_batches", {"n_batches": 4, "aggregate": "max"})
    first = strategy.select(context(scores, budget=64, seed=11)).indices
    assert first == strategy.select(context(scores, budget=64, seed=11)).indices
    assert len(first) == 4


def test_wraps_bald():
    selection = get_strategy("stochastic_batches", {"base": "bald", "batch_size": 1}).select(
        context(np.zeros(4), budget=16, bald=[0.1, 0.3, 0.9, 0.2]))
    assert selection.indices == [2]


@pytest.mark.parametrize("options", [{"base": "full"}, {"base": "stochastic_batches"}, {"aggregate": "median"},
                                     {"n_batches": 0}, {"base": "nope"}])
def test_bad_options_are_config_errors(options):
    with pytest.raises(ConfigError):
        get_strategy("stochastic_batches", options)
