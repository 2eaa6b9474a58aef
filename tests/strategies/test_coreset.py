"""``coreset``: k-center greedy over descriptors, hand-built and with a tiny model's descriptors."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from activeseg.model.inference import mc_dropout_scores
from activeseg.core.labels import LabelState
from activeseg.model.network import build_model
from activeseg.loop.oracle import reveal_from_ground_truth
from activeseg.core.pool import pool_regions, round_budget, unlabeled
from activeseg.strategies import QueryContext, get_strategy
from activeseg.strategies.coreset import k_center_greedy, labeled_regions, nearest_distance


def test_hand_built_k_center():
    centres = np.array([[0.0, 0.0]])
    X = np.array([[1.0, 0.0], [5.0, 0.0], [5.0, 1.0], [-3.0, 0.0]])
    # distances to (0, 0): 1, 5, 5.099, 3 -> row 2; then to {(0, 0), (5, 1)}: 1, 1, 0, 3 -> row 3
    picks, at_pick, dist = k_center_greedy(X, centres, np.ones(4), budget=2)
    assert picks.tolist() == [2, 3]
    assert np.allclose(at_pick, [np.sqrt(26), 3.0])
    assert np.allclose(dist, [1.0, 1.0, 0.0, 0.0])


def test_unaffordable_candidates_are_skipped():
    X = np.array([[1.0, 0.0], [5.0, 0.0], [5.0, 1.0], [-3.0, 0.0]])
    picks, _, _ = k_center_greedy(X, np.zeros((1, 2)), np.array([1, 1, 5, 1]), budget=3)
    assert picks.tolist() == [1, 3, 0]


def test_without_centres_it_starts_farthest_from_the_mean():
    X = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [9.0, 0.0]])  # mean 3
    picks, _, _ = k_center_greedy(X, np.zeros((0, 2)), np.ones(4), budget=2)
    assert picks.tolist() == [3, 0]


def test_blocked_nearest_distance():
    rng = np.random.default_rng(0)
    X, C = rng.normal(size=(50, 6)), rng.normal(size=(23, 6))
    assert np.allclose(nearest_distance(X, C, block=7), cdist(X, C).min(axis=1))
    assert np.isinf(nearest_distance(X, np.zeros((0, 6)))).all()


@pytest.fixture
def tiny_query(tiny_cfg, tiny_dataset):
    """A context over an untrained tiny model, two regions of the first image revealed."""
    stems = tiny_dataset.stems[:4]
    regions = pool_regions(tiny_dataset, stems, tiny_cfg)
    state = LabelState.empty({s: (64, 64) for s in stems})
    reveal_from_ground_truth(state, tiny_dataset, regions[:2], 0)
    torch.manual_seed(0)
    m = tiny_cfg.model
    model = build_model(3, 2, m.width, m.depth, m.dropout)
    device = torch.device("cpu")
    return QueryContext(
        candidates=unlabeled(regions, state), budget=round_budget(tiny_cfg, state), state=state,
        dataset=tiny_dataset, rng=np.random.default_rng(0),
        score_pool=lambda regs: mc_dropout_scores(model, tiny_dataset, regs, 2, 4, device),
        extras={"model": model, "device": device, "cfg": tiny_cfg, "split": {"train": stems}},
    ), regions


def test_labeled_regions_are_the_fully_revealed_ones(tiny_query):
    ctx, regions = tiny_query
    assert labeled_regions(ctx) == [r for r in regions if ctx.state.new_pixels(r) == 0]
    assert regions[0] in labeled_regions(ctx) and regions[1] in labeled_regions(ctx)


def test_strategy_runs_k_center_from_the_labeled_descriptors(tiny_query):
    ctx, _ = tiny_query
    selection = get_strategy("coreset").select(ctx)
    labeled = labeled_regions(ctx)
    centres = mc_dropout_scores(ctx.extras["model"], ctx.dataset, labeled, 1, 4, ctx.extras["device"]).descriptors
    picks, at_pick, _ = k_center_greedy(ctx.pool.descriptors, centres, ctx.costs, ctx.budget)
    assert selection.indices[: len(picks)] == picks.tolist()
    assert np.allclose(selection.scores[: len(picks)], at_pick)
    assert 0 < selection.spent <= ctx.budget
    assert not set(selection.indices) & {i for i, r in enumerate(ctx.candidates) if r in labeled}


def test_without_a_model_in_the_context_it_says_what_is_missing(tiny_query):
    ctx, _ = tiny_query
    ctx.extras = {}
    with pytest.raises(RuntimeError, match="model"):
        get_strategy("coreset").select(ctx)
