import numpy as np
import pytest

from activeseg.core.config import ConfigError
from activeseg.core.labels import LabelState
from activeseg.core.partition import Region
from activeseg.strategies import QueryContext, fill_budget, get_strategy, names


def context(regions, budget, known=None):
    state = LabelState.empty({"a": (8, 8)})
    if known is not None:
        state.reveal(known, np.zeros((known.y1 - known.y0, known.x1 - known.x0), np.uint8), 0, "t")
    return QueryContext(candidates=regions, budget=budget, state=state, dataset=None, rng=np.random.default_rng(0))


def test_fill_budget_counts_overlap_between_the_rounds_picks():
    regions = [Region("a", 0, 0, 4, 4), Region("a", 0, 2, 4, 6), Region("a", 4, 4, 8, 8)]
    # budget 24: first 16 px, the overlapping second only 8 more -> 24, exactly spent
    picks, costs = fill_budget(np.array([0, 1, 2]), context(regions, 24))
    assert (picks, costs) == ([0, 1], [16, 8])


def test_fill_budget_skips_what_does_not_fit_and_never_exceeds():
    regions = [Region("a", 0, 0, 4, 4), Region("a", 0, 0, 2, 2), Region("a", 4, 4, 8, 8)]
    picks, costs = fill_budget(np.array([0, 2, 1]), context(regions, 20))
    assert (picks, costs) == ([0], [16])  # 16 fits, next 16 does not; the 2x2 is inside the first: 0 new
    picks, costs = fill_budget(np.array([2, 1, 0]), context(regions, 20))
    assert (picks, costs) == ([2, 1], [16, 4])


def test_fill_budget_takes_the_top_region_alone_when_nothing_fits():
    regions = [Region("a", 0, 0, 8, 8), Region("a", 0, 0, 4, 8)]
    assert fill_budget(np.array([1, 0]), context(regions, 10)) == ([1], [32])


def test_fill_budget_ignores_revealed_pixels():
    regions = [Region("a", 0, 0, 4, 4), Region("a", 0, 0, 4, 8)]
    ctx = context(regions, 16, known=Region("a", 0, 0, 4, 4))
    assert fill_budget(np.array([0, 1]), ctx) == ([1], [16])


def test_registry_lists_names_for_an_unknown_strategy():
    assert {"random", "entropy", "mc_variance", "full"} <= set(names())
    with pytest.raises(ConfigError) as err:
        get_strategy("nope")
    assert "unknown strategy 'nope'" in str(err.value) and "mc_variance" in str(err.value)


def test_unknown_option_is_named():
    with pytest.raises(ConfigError, match=r"^query\.options\.random\.foo: unknown key \(valid keys here: none\)$"):
        get_strategy("random", {"foo": 1})


def test_score_strategies_rank_by_their_pool_score():
    from activeseg.model.inference import PoolScores

    regions = [Region("a", 0, 0, 4, 4), Region("a", 4, 0, 8, 4), Region("a", 0, 4, 4, 8)]
    ctx = context(regions, 16)
    ctx.pool = PoolScores([r.id for r in regions], entropy=np.array([0.1, 0.9, 0.5]),
                          variance=np.array([0.3, 0.1, 0.2]), bald=np.zeros(3), descriptors=np.zeros((3, 2)))
    assert get_strategy("entropy").select(ctx).indices == [1]
    assert get_strategy("mc_variance").select(ctx).indices == [0]
    full = get_strategy("full").select(ctx)
    assert full.indices == [0, 1, 2] and full.spent == 48
