"""``typiclust``: the most typical region of the least-labeled, largest clusters, on hand-built blobs and
through a query with the pretrained encoder's embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from activeseg.strategies import get_strategy
from activeseg.strategies.representative import EPS, embeddings, select_in_order, typicality, typiclust_order
from tests.strategies.test_representative import PATCH, embedded_context, random_vectors

NONE = np.zeros((0, 2))
# typicality of a grid's centre: 5 x 5, k = 12 nearest (4 at 1, 4 at sqrt 2, 4 at 2); 3 x 3, k = 4 (4 at 1)
CENTRE_5 = 1 / ((4 + 4 * np.sqrt(2) + 8) / 12 + EPS)
CENTRE_3 = 1 / (1 + EPS)


def grid(side: int, at: tuple[float, float], without: tuple[tuple[int, int], ...] = ()) -> np.ndarray:
    """A square grid of unit spacing centred on ``at``, less the offsets ``without``: its centre is its
    unique most typical point (for 5 x 5, also without one corner)."""
    r = np.arange(side) - side // 2
    return np.array([(x, y) for x in r for y in r if (x, y) not in without], float) + at


def index_of(points: np.ndarray, point: tuple[float, float]) -> int:
    return int(np.flatnonzero((points == point).all(axis=1))[0])


@pytest.fixture
def blobs() -> np.ndarray:
    """Three far-apart blobs, listed smallest first: 9 points around (0, 100), 25 around (0, 0), 24 around
    (100, 0)."""
    return np.vstack([grid(3, (0, 100)), grid(5, (0, 0)), grid(5, (100, 0), without=((2, 2),))])


def test_typicality_is_the_inverse_mean_distance_to_half_the_points_at_most():
    line = np.array([[0.0], [1.0], [3.0], [7.0]])  # k = min(20, 4 // 2) = 2
    assert np.allclose(typicality(line, 20), 1 / (np.array([2.0, 1.5, 2.5, 5.0]) + EPS))
    assert np.allclose(typicality(line, 1), 1 / (np.array([1.0, 1.0, 2.0, 4.0]) + EPS))
    assert typicality(np.array([[1.0, 2.0]]), 20).tolist() == [0.0]


@pytest.mark.parametrize(("side", "without", "value"), [(5, (), CENTRE_5), (5, ((2, 2),), CENTRE_5), (3, (), CENTRE_3)])
def test_a_grids_centre_is_its_unique_most_typical_point(side, without, value):
    points = grid(side, (0, 0), without)
    scores, centre = typicality(points, 20), index_of(points, (0, 0))
    assert scores[centre] == pytest.approx(value)
    assert (np.delete(scores, centre) < value - 1e-3).all()


def test_without_labels_one_centre_per_blob_largest_blob_first(blobs):
    picks = typiclust_order(blobs, NONE, 3, seed=0)
    assert picks.tolist() == [index_of(blobs, (0, 0)), index_of(blobs, (100, 0)), index_of(blobs, (0, 100))]


def test_a_blob_with_a_labeled_point_is_visited_last(blobs):
    # K = 1 + 2 = 3: the blobs; the largest holds a labeled point, so the other two go first
    picks = typiclust_order(blobs, np.array([[0.5, 0.5]]), 2, seed=0)
    assert picks.tolist() == [index_of(blobs, (100, 0)), index_of(blobs, (0, 100))]
    picks = typiclust_order(blobs, np.array([[100.5, 0.5]]), 2, seed=0)
    assert picks.tolist() == [index_of(blobs, (0, 0)), index_of(blobs, (0, 100))]


def test_clusters_of_at_most_five_points_are_dropped():
    tiny = grid(3, (0, 100))[:5]  # 5 points
    points = np.vstack([grid(5, (0, 0)), tiny, grid(5, (100, 0), without=((2, 2),))])
    picks = typiclust_order(points, NONE, 3, seed=0)
    assert picks[:2].tolist() == [index_of(points, (0, 0)), index_of(points, (100, 0))]
    assert picks[2] < 25, "the third pick goes back to the largest blob, not to the 5 points"
    picks = typiclust_order(points, NONE, 3, seed=0, min_cluster_size=4)
    assert picks[2] in range(25, 30), "with clusters of 4 or fewer dropped, the 5 points are a cluster"


def test_when_every_cluster_is_small_none_is_dropped():
    points = np.vstack([grid(2, (0, 0)), grid(2, (50, 0)), grid(2, (0, 50))])  # 4 points each
    picks = typiclust_order(points, NONE, 3, seed=0)
    assert sorted(picks // 4) == [0, 1, 2]


def test_count_is_capped_at_the_candidates_and_the_order_fixed_by_the_seed():
    X = np.random.default_rng(0).normal(size=(40, 3))
    picks = typiclust_order(X, X[:5] + 0.01, 100, seed=3)
    assert sorted(picks.tolist()) == list(range(40))
    none = np.zeros((0, 3))
    assert typiclust_order(X, none, 7, seed=3).tolist() == typiclust_order(X, none, 7, seed=3).tolist()


def test_strategy_spends_the_budget_on_typiclusts_picks_from_the_pool_embeddings(tiny_cfg, tiny_dataset):
    ctx = embedded_context(tiny_cfg, tiny_dataset, random_vectors(), budget=3 * PATCH + 600, seed=5)
    options = {"min_cluster_size": 2, "neighbours": 3}
    selection = get_strategy("typiclust", options).select(ctx)  # no model in the context: the embeddings only
    candidates, labeled = embeddings(ctx)
    seed = int(np.random.default_rng(5).integers(2**31 - 1))
    picks = typiclust_order(candidates, labeled, 3, seed, min_cluster_size=2, neighbours=3)
    assert selection == select_in_order(ctx, picks, candidates, labeled)
    assert selection.indices[:3] == picks.tolist()
    assert 0 < selection.spent <= ctx.budget
