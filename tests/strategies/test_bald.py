"""``bald``: ranks by PoolScores.bald within the pixel budget; a tiny campaign end to end."""

from __future__ import annotations


import numpy as np

from activeseg.model.inference import PoolScores
from activeseg.core.labels import LabelState
from activeseg.core.partition import Region
from activeseg.strategies import QueryContext, get_strategy


def context(bald: list[float], budget: int) -> QueryContext:
    """One 4 x 4n image cut into n disjoint 4 x 4 regions (16 pixels each)."""
    n = len(bald)
    regions = [Region("img", 0, 4 * i, 4, 4 * i + 4) for i in range(n)]
    zeros = np.zeros(n)
    pool = PoolScores([r.id for r in regions], zeros + 1.0, zeros + 1.0, np.array(bald), np.zeros((n, 2)))
    return QueryContext(regions, budget, LabelState.empty({"img": (4, 4 * n)}), None, np.random.default_rng(0),
                        score_pool=lambda regs: pool)


def test_bald_takes_the_highest_mutual_information_within_the_budget():
    selection = get_strategy("bald").select(context([0.1, 0.5, 0.3, 0.2, 0.4], budget=48))
    assert selection.indices == [1, 4, 2]
    assert selection.scores == [0.5, 0.4, 0.3]
    assert selection.spent == 48


def test_bald_never_exceeds_the_budget():
    selection = get_strategy("bald").select(context([0.1, 0.5, 0.3], budget=40))
    assert selection.indices == [1, 2]
    assert selection.spent == 32
