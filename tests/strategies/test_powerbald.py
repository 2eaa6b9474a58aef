"""``powerbald``: draws without replacement with P proportional to score^beta, deterministic per seed,
top-k as beta grows, over any base score, within the pixel budget."""

from __future__ import annotations

import numpy as np
import pytest

from activeseg.core.config import ConfigError
from activeseg.core.labels import LabelState
from activeseg.core.partition import Region
from activeseg.model.inference import PoolScores
from activeseg.strategies import QueryContext, get_strategy
from activeseg.strategies.powerbald import power_order


def context(bald, budget: int, seed: int = 0, entropy=None) -> QueryContext:
    """One 4 x 4n image cut into n disjoint 4 x 4 regions (16 pixels each)."""
    n = len(bald)
    regions = [Region("img", 0, 4 * i, 4, 4 * i + 4) for i in range(n)]
    entropy = np.ones(n) if entropy is None else np.asarray(entropy, dtype=float)
    pool = PoolScores([r.id for r in regions], entropy, np.zeros(n), np.asarray(bald, dtype=float), np.zeros((n, 2)))
    return QueryContext(regions, budget, LabelState.empty({"img": (4, 4 * n)}), None, np.random.default_rng(seed),
                        score_pool=lambda regs: pool)


def test_the_first_draw_follows_score_to_the_power_beta():
    scores = np.array([1.0, 2.0, 3.0, 4.0])
    rng = np.random.default_rng(0)
    draws = 20_000
    for beta in (1.0, 2.0):
        first = np.bincount([power_order(scores, beta, rng)[0] for _ in range(draws)], minlength=4) / draws
        expected = scores**beta / (scores**beta).sum()  # beta 1: 0.1 .. 0.4; beta 2: 1/30 .. 16/30
        np.testing.assert_allclose(first, expected, atol=0.012)


def test_the_second_draw_is_without_replacement():
    """P(second = j | first = i) = s_j / (sum - s_i): with scores 1, 1, 2, P(second = 2) = 2 * (1/4 * 2/3) = 1/3."""
    rng = np.random.default_rng(1)
    orders = np.array([power_order(np.array([1.0, 1.0, 2.0]), 1.0, rng) for _ in range(20_000)])
    assert all(sorted(o) == [0, 1, 2] for o in orders[:100])
    assert abs((orders[:, 1] == 2).mean() - 1 / 3) < 0.012


def test_a_large_beta_gives_the_top_k_ranking():
    scores = np.array([0.11, 0.5, 0.3, 0.12, 0.45, 0.2])
    for seed in range(20):
        assert power_order(scores, 1e4, np.random.default_rng(seed)).tolist() == [1, 4, 2, 5, 3, 0]
    selection = get_strategy("powerbald", {"beta": 1e4}).select(context(scores, budget=48, seed=3))
    assert selection.indices == [1, 4, 2] and selection.scores == [0.5, 0.45, 0.3]


def test_scores_at_or_below_zero_come_last_in_candidate_order():
    order = power_order(np.array([0.0, 0.2, -1e-8, 0.1, 0.0]), 1.0, np.random.default_rng(0))
    assert sorted(order[:2]) == [1, 3] and order[2:].tolist() == [0, 2, 4]


def test_a_seed_fixes_the_selection_and_seeds_differ():
    scores = np.linspace(0.1, 1.0, 30)
    picks = {seed: get_strategy("powerbald").select(context(scores, budget=80, seed=seed)).indices for seed in range(4)}
    again = get_strategy("powerbald").select(context(scores, budget=80, seed=2))
    assert again.indices == picks[2] and len(picks[2]) == 5
    assert len({tuple(p) for p in picks.values()}) == 4
    assert again.spent == 80 and again.scores == [float(scores[i]) for i in again.indices]


def test_the_base_score_is_an_option():
    """base entropy: the bald scores are ignored (all 0 would put every region in candidate order)."""
    selection = get_strategy("powerbald", {"base": "entropy", "beta": 1e4}).select(
        context(np.zeros(4), budget=32, entropy=[0.2, 0.1, 0.9, 0.5]))
    assert selection.indices == [2, 3] and selection.scores == [0.9, 0.5]


@pytest.mark.parametrize("options, message", [
    ({"base": "powerbald"}, "query.options.powerbald.base: expected one of ['bald', 'entropy', 'mc_variance', "
                            "'random', 'ripu'], got 'powerbald'"),
    ({"base": "full"}, "query.options.powerbald.base: expected one of ['bald', 'entropy', 'mc_variance', 'random', "
                       "'ripu'], got 'full'"),
    ({"beta": 0}, "query.options.powerbald.beta: must be positive, got 0"),
])
def test_bad_options_name_the_key(options, message):
    with pytest.raises(ConfigError) as err:
        get_strategy("powerbald", options)
    assert str(err.value) == message
