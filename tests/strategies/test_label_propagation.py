import json
import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon

from activeseg.core.config import ConfigError, load_config
from activeseg.core.data import make_split
from activeseg.core.labels import LabelState
from activeseg.model.network import build_model
from activeseg.loop.oracle import reveal_from_ground_truth
from activeseg.core.pool import initial_regions, pool_regions, unlabeled
from activeseg.loop.simulate import apply_selection, simulate
from activeseg.strategies import QueryContext, get_strategy
from activeseg.strategies.label_propagation import (best_threshold, colour_histograms, euclidean,
                                                    js_divergence, knn_pseudo_labeled, mean_iou,
                                                    oracle_order, threshold_mask)


def test_colour_histograms_per_channel_normalised():
    image = np.array([[[0.0, 1.0], [0.1, 0.9]], [[0.9, 0.6], [1.0, 0.2]]])  # (2, 2, 2)
    h = colour_histograms([image], bins=2)
    # channel 0: 0, 0.1 | 0.9, 1.0 -> [2, 2]; channel 1: 0.2 | 1.0, 0.9, 0.6 -> [1, 3]; total 8
    assert h.tolist() == [[2 / 8, 2 / 8, 1 / 8, 3 / 8]]


def test_js_divergence_matches_scipy():
    rng = np.random.default_rng(0)
    p, q = rng.dirichlet(np.ones(6), 3), rng.dirichlet(np.ones(6), 4)
    p[0, :2] = [0.0, p[0, 0] + p[0, 1]]  # an empty bin
    d = js_divergence(p, q)
    expected = [[jensenshannon(a, b) ** 2 for b in q] for a in p]
    assert d == pytest.approx(np.array(expected))
    assert js_divergence(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0], [1.0, 0.0]])).tolist() == [[math.log(2), 0.0]]


def test_euclidean():
    assert euclidean(np.array([[0.0, 0.0]]), np.array([[3.0, 4.0], [0.0, 0.0]])).tolist() == [[5.0, 0.0]]


def test_unlabeled_neighbours_of_labeled_samples_are_pseudo_labeled():
    x = np.array([[0.0], [0.1], [5.0], [5.1], [10.0], [0.3]])
    labeled = np.array([True, False, False, False, False, False])
    # k = 1: 0.1's nearest is 0 (labeled); 0.3's nearest is 0.1; with k = 2 it is 0.1 then 0
    assert knn_pseudo_labeled(x, labeled, 1, euclidean).tolist() == [False, True, False, False, False, False]
    assert knn_pseudo_labeled(x, labeled, 2, euclidean).tolist() == [False, True, False, False, False, True]
    # k above the pool size is capped: everything unlabeled sees the labeled sample
    assert knn_pseudo_labeled(x, labeled, 40, euclidean).tolist() == [False] + [True] * 5
    assert not knn_pseudo_labeled(x, np.zeros(6, bool), 40, euclidean).any()


def test_knn_ties_are_broken_by_pool_order():
    x = np.array([[0.0], [1.0], [2.0]])  # 1 is equally far from 0 and 2
    assert knn_pseudo_labeled(x, np.array([True, False, False]), 1, euclidean).tolist() == [False, True, False]
    # labeled 2 ties with unlabeled 0 for row 1: row 0 comes first, so 1 is not pseudo-labeled
    assert knn_pseudo_labeled(x, np.array([False, False, True]), 1, euclidean).tolist() == [False, False, False]


def test_knn_matches_a_brute_force_stable_sort():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 4, size=(60, 2)).astype(float)  # many exact ties and duplicates
    labeled = rng.random(60) < 0.2
    d = euclidean(x, x)
    np.fill_diagonal(d, np.inf)
    for k in (1, 3, 10):
        nearest = np.argsort(d, axis=1, kind="stable")[:, :k]
        expected = labeled[nearest].any(1) & ~labeled
        assert knn_pseudo_labeled(x, labeled, k, euclidean).tolist() == expected.tolist()


def test_oracle_order_draws_eligible_first_deterministically():
    eligible = np.array([False, True, True, False, True])
    order = oracle_order(eligible, np.random.default_rng(3))
    assert sorted(order[:3].tolist()) == [1, 2, 4] and sorted(order[3:].tolist()) == [0, 3]
    assert order.tolist() == oracle_order(eligible, np.random.default_rng(3)).tolist()


def test_threshold_masks_and_iou():
    prob = np.array([[[0.8, 0.4, 0.1]], [[0.2, 0.6, 0.9]]])  # (2, 1, 3)
    assert threshold_mask(prob, 0.5).tolist() == [[0, 1, 1]]
    assert threshold_mask(prob, 0.7).tolist() == [[0, 0, 1]]
    three = np.array([[[0.5, 0.2]], [[0.3, 0.3]], [[0.2, 0.5]]])
    assert threshold_mask(three, 0.25).tolist() == [[1, 2]] and threshold_mask(three, 0.4).tolist() == [[0, 2]]
    assert mean_iou(np.array([[0, 1, 1, 2]]), np.array([[0, 1, 0, 0]]), 3) == pytest.approx((1 / 2 + 0) / 2)
    assert mean_iou(np.zeros((2, 2)), np.zeros((2, 2)), 2) == 1.0


def test_best_threshold_maximises_validation_iou():
    fg = np.array([[0.2, 0.4, 0.6, 0.8]])
    prob = np.stack([1 - fg, fg])
    gt = np.array([[0, 0, 1, 1]])
    # IoU at 0.1, 0.3, 0.5, 0.7, 0.9: 1/2, 2/3, 1, 1/2, 0
    assert best_threshold([prob], [gt], np.array([0.1, 0.3, 0.5, 0.7, 0.9])) == 0.5
    assert best_threshold([prob], [gt], np.array([0.1, 0.3, 0.7])) == 0.3


def test_options_are_checked():
    with pytest.raises(ConfigError, match=r"query\.options\.label_propagation\.k: must be at least 1"):
        get_strategy("label_propagation", {"k": 0})
    with pytest.raises(ConfigError, match=r"query\.options\.label_propagation\.distance: expected one of"):
        get_strategy("label_propagation", {"distance": "cosine"})


def model_context(cfg, dataset, budget, seed=0):
    split = make_split(dataset.stems, cfg.data.split.train, cfg.data.split.val, cfg.data.seed)
    regions = pool_regions(dataset, split["train"], cfg)
    state = LabelState.empty({s: (dataset.samples[s].height, dataset.samples[s].width) for s in split["train"]})
    reveal_from_ground_truth(state, dataset, initial_regions(regions, 2, seed), 0)
    torch.manual_seed(0)
    model = build_model(dataset.channels, dataset.classes, 4, 2, 0.2)
    extras = {"cfg": cfg, "split": split, "model": model, "device": torch.device("cpu")}
    ctx = QueryContext(unlabeled(regions, state), budget, state, dataset, np.random.default_rng(seed),
                       model_id="model-3", extras=extras)
    return ctx, regions


@pytest.mark.parametrize("distance", ["histogram_js", "descriptor"])
def test_select_picks_outside_the_pseudo_labeled_set_and_pseudo_labels_neighbours(tiny_dataset, distance):
    cfg = load_config(None, ["partition.side=32", "partition.overlap=0"])  # 24 disjoint 1024-px patches
    ctx, pool = model_context(cfg, tiny_dataset, 2 * 1024)
    strategy = get_strategy("label_propagation", {"k": 3, "distance": distance})
    selection = strategy.select(ctx)
    assert selection.costs == [1024, 1024] and selection.spent == ctx.budget
    features = strategy.features(ctx, pool)
    metric = js_divergence if distance == "histogram_js" else euclidean
    labeled = np.array([ctx.state.new_pixels(r) == 0 for r in pool])
    before = knn_pseudo_labeled(features, labeled, 3, metric)
    picked = [ctx.candidates[i].id for i in selection.indices]
    assert not {pool[j].id for j in np.flatnonzero(before)} & set(picked)
    assert selection.scores == [1.0, 1.0]
    after = labeled | np.isin([r.id for r in pool], picked)
    expected = [pool[j].id for j in np.flatnonzero(knn_pseudo_labeled(features, after, 3, metric))]
    assert [r.id for r, _ in selection.pseudo] == expected and expected
    assert all(m.shape == (32, 32) and m.dtype == np.uint8 for _, m in selection.pseudo)
    assert selection.pseudo_origin == "model-3" and selection.replace_pseudo
    again, _ = model_context(cfg, tiny_dataset, 2 * 1024)
    assert strategy.select(again).indices == selection.indices

    revealed = ctx.state.revealed_pixels()
    apply_selection(ctx.state, tiny_dataset, selection, ctx.candidates, 1)
    assert ctx.state.revealed_pixels() == revealed + selection.spent
    assert {p["origin"] for p in ctx.state.pseudo_regions.values()} == {"model-3"}


def test_when_everything_is_pseudo_labeled_the_oracle_still_picks(tiny_dataset):
    cfg = load_config(None, ["partition.side=32", "partition.overlap=0"])
    ctx, _ = model_context(cfg, tiny_dataset, 1024)
    selection = get_strategy("label_propagation", {"k": 40}).select(ctx)  # k caps: all pseudo-labeled
    assert selection.spent == 1024 and selection.scores == [0.0]
    assert len(selection.pseudo) == len(ctx.candidates) - 1


def test_tiny_simulation_end_to_end(tiny_cfg, tiny_data_dir, tmp_path):
    tiny_cfg.query.options["label_propagation"] = {"k": 4}
    out = tmp_path / "out"
    results = simulate(tiny_cfg, tiny_data_dir, ["label_propagation"], [0], out, rounds=2, progress=False)
    assert [r["round"] for r in results["runs"]] == [0, 1]
    folder = out / "runs" / "label_propagation" / "seed-0"
    selection = json.loads((folder / "round-000" / "selection.json").read_text())
    state = LabelState.load(folder / "round-000")
    assert 0 < sum(s["cost"] for s in selection) <= round(0.05 * state.total_pixels())
    assert state.revealed_pixels() == sum(h["cost"] for h in state.history)
    assert {p["origin"] for p in state.pseudo_regions.values()} == {str(folder / "round-000" / "model.pt")}
