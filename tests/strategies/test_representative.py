"""The representativeness machinery: normalisation, the RBF coverage, the left-over order, the embeddings of a
query (the pretrained encoder's when given, else the round model's descriptors)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from activeseg.core.config import Config
from activeseg.core.data import Dataset
from activeseg.core.labels import LabelState
from activeseg.core.partition import Region
from activeseg.core.pool import pool_regions, unlabeled
from activeseg.loop.oracle import reveal_from_ground_truth
from activeseg.model.inference import mc_dropout_scores
from activeseg.model.network import build_model
from activeseg.strategies import QueryContext, fill_budget
from activeseg.strategies.coreset import labeled_descriptors, labeled_regions
from activeseg.strategies.representative import (complete, coverage, embeddings, mean_coverage, normalise, rbf,
                                                 select_in_order)

PATCH = 32 * 32  # the tiny partition's region


def embedded_context(cfg: Config, dataset: Dataset, vector: Callable[[Region], np.ndarray], budget: int,
                     seed: int = 0) -> QueryContext:
    """A query over the first four tiny images, the first two (overlapping) regions revealed, with
    ``pool_embeddings`` from ``vector`` and no model."""
    stems = dataset.stems[:4]
    regions = pool_regions(dataset, stems, cfg)
    state = LabelState.empty({s: (64, 64) for s in stems})
    reveal_from_ground_truth(state, dataset, regions[:2], 0)
    return QueryContext(candidates=unlabeled(regions, state), budget=budget, state=state, dataset=dataset,
                        rng=np.random.default_rng(seed),
                        extras={"pool_embeddings": {r.id: vector(r) for r in regions}, "cfg": cfg,
                                "split": {"train": stems}})


def random_vectors(seed: int = 0, dim: int = 8) -> Callable[[Region], np.ndarray]:
    rng = np.random.default_rng(seed)
    table: dict[str, np.ndarray] = {}
    return lambda region: table.setdefault(region.id, rng.normal(size=dim))


def test_normalise_scales_rows_to_unit_length_and_leaves_zero_rows():
    assert np.allclose(normalise(np.array([[3.0, 4.0], [0.0, 0.0], [0.0, -2.0]])), [[0.6, 0.8], [0, 0], [0, -1]])


def test_rbf_kernel_values():
    X, Y = np.array([[0.0], [1.0]]), np.array([[0.0], [2.0], [3.0]])
    expected = np.exp(-np.array([[0.0, 4, 9], [1, 1, 4]]) / (2 * 0.5**2))
    assert np.allclose(rbf(X, Y, 0.5), expected)
    assert rbf(X, Y, 0.5).dtype == np.float32


def test_mean_coverage_of_two_points_by_one():
    # c = (k(0, 0), k(1, 0)) = (1, exp(-1/2)) with bandwidth 1
    assert mean_coverage(np.array([[0.0], [1.0]]), np.array([[0.0]]), 1.0) == pytest.approx((1 + np.exp(-0.5)) / 2)


def test_mean_coverage_is_one_when_everything_is_labeled_and_zero_without_labels():
    X = normalise(np.random.default_rng(0).normal(size=(20, 5)))
    assert mean_coverage(X, X, 0.5) == pytest.approx(1.0)
    assert mean_coverage(X, np.zeros((0, 5)), 0.5) == 0.0


def test_coverage_is_the_largest_kernel_value_to_the_labeled_set():
    rng = np.random.default_rng(1)
    pool, labeled = rng.normal(size=(30, 4)), rng.normal(size=(6, 4))
    assert np.allclose(coverage(pool, labeled, 0.7), rbf(pool, labeled, 0.7).max(axis=1), atol=1e-6)


def test_complete_appends_the_rest_farthest_first_from_labeled_and_picks():
    candidates = np.array([[1.0], [5.0], [2.0], [-3.0], [9.0]])
    # nearest of {0 (labeled), 9 (pick 4)}: 1, 4, 2, 3, 0 -> 1 (5.0), 3 (-3.0), 2 (2.0), 0 (1.0)
    assert complete(np.array([4]), candidates, np.array([[0.0]])).tolist() == [4, 1, 3, 2, 0]


def test_pool_embeddings_give_the_candidates_and_the_fully_revealed_regions(tiny_cfg, tiny_dataset):
    vector = random_vectors()
    ctx = embedded_context(tiny_cfg, tiny_dataset, vector, budget=PATCH)
    candidates, labeled = embeddings(ctx)
    assert np.allclose(candidates, normalise([vector(r) for r in ctx.candidates]))
    assert len(labeled_regions(ctx)) == 2
    assert np.allclose(labeled, normalise([vector(r) for r in labeled_regions(ctx)]))


def test_without_pool_embeddings_the_round_models_descriptors(tiny_cfg, tiny_dataset):
    ctx = embedded_context(tiny_cfg, tiny_dataset, random_vectors(), budget=PATCH)
    torch.manual_seed(0)
    model, device = build_model(3, 2, 4, 2, tiny_cfg.model.dropout), torch.device("cpu")
    ctx.score_pool = lambda regions: mc_dropout_scores(model, tiny_dataset, regions, 1, 4, device)
    ctx.extras.update({"pool_embeddings": None, "model": model, "device": device})
    candidates, labeled = embeddings(ctx)
    assert np.allclose(candidates, normalise(ctx.pool.descriptors))
    assert labeled.shape[0] == 2 and np.allclose(labeled, normalise(labeled_descriptors(ctx)))


def test_select_in_order_takes_the_picks_then_the_least_covered_within_the_budget(tiny_cfg, tiny_dataset):
    ctx = embedded_context(tiny_cfg, tiny_dataset, random_vectors(), budget=3 * PATCH + 600)
    candidates, labeled = embeddings(ctx)
    picks = np.array([20, 9, 30])  # whole patches of three images: 3 x 1024 px
    selection = select_in_order(ctx, picks, candidates, labeled)
    assert (selection.indices, selection.costs) == fill_budget(complete(picks, candidates, labeled), ctx)
    assert selection.indices[:3] == [20, 9, 30] and len(selection.indices) > 3, "600 px left over buy more"
    assert selection.scores == [3.0, 2.0, 1.0] + [0.0] * (len(selection.indices) - 3)
    assert selection.spent <= ctx.budget
