"""``maxherding``: greedy gain in generalised coverage, by hand on a line and through a query with the
pretrained encoder's embeddings."""

from __future__ import annotations

import numpy as np

from activeseg.strategies import get_strategy
from activeseg.strategies.representative import embeddings, maxherding_order, select_in_order
from tests.strategies.test_representative import PATCH, embedded_context, random_vectors

LINE = np.array([[0.0], [1.0], [2.0], [10.0]])
# bandwidth 1: the kernel is K1 = exp(-1/2) = 0.61 at distance 1, K2 = exp(-2) = 0.14 at 2, ~0 at 8 or more


def test_by_hand_on_a_line_without_labels():
    # kernel sums: 0 -> 1 + K1 + K2, 1 -> 1 + 2 K1, 2 -> 1 + K1 + K2, 10 -> 1; then c = (K1, 1, K1, 0):
    # gains 0 -> 1 - K1, 2 -> 1 - K1, 10 -> 1; then 0 and 2 tie at 1 - K1 (lower index), then nothing is left
    assert maxherding_order(LINE, np.zeros((0, 1)), 4, bandwidth=1.0).tolist() == [1, 3, 0, 2]


def test_picks_avoid_the_neighbourhood_of_a_labeled_point():
    # a labeled point at 1: c = (1 | K1, 1, K1, 0) covers 0, 1, 2; the far point 10 goes first, the candidate
    # at the labeled point itself last, with no gain
    assert maxherding_order(LINE, np.array([[1.0]]), 4, bandwidth=1.0).tolist() == [3, 0, 2, 1]


def test_count_is_capped_at_the_candidates():
    assert maxherding_order(LINE, np.zeros((0, 1)), 10, bandwidth=1.0).tolist() == [1, 3, 0, 2]


def test_strategy_covers_the_groups_far_from_the_labeled_regions(tiny_cfg, tiny_dataset):
    """The labeled regions of image 0 and its other candidates sit on e0, each other image's regions on its
    own axis: each pick covers one uncovered image (9 regions x (1 - exp(-4)) each), lowest index first."""
    image = {stem: i for i, stem in enumerate(tiny_dataset.stems[:4])}
    ctx = embedded_context(tiny_cfg, tiny_dataset, lambda r: np.eye(4)[image[r.stem]], budget=3 * PATCH + 600)
    selection = get_strategy("maxherding").select(ctx)  # bandwidth 0.5: k(e_i, e_j) = exp(-2 / 0.5)
    first_of = [next(i for i, r in enumerate(ctx.candidates) if r.stem == stem) for stem in tiny_dataset.stems[1:4]]
    assert selection.indices[:3] == first_of
    assert selection.scores[:3] == [3.0, 2.0, 1.0]
    assert 0 < selection.spent <= ctx.budget


def test_strategy_spends_the_budget_on_maxherdings_picks(tiny_cfg, tiny_dataset):
    ctx = embedded_context(tiny_cfg, tiny_dataset, random_vectors(), budget=3 * PATCH + 600)
    selection = get_strategy("maxherding", {"bandwidth": 0.8}).select(ctx)
    candidates, labeled = embeddings(ctx)
    picks = maxherding_order(candidates, labeled, 3, bandwidth=0.8)
    assert selection == select_in_order(ctx, picks, candidates, labeled)
    assert selection.indices[:3] == picks.tolist()
    assert 0 < selection.spent <= ctx.budget
