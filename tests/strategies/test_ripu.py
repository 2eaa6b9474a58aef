"""``ripu``: region impurity of hand-made prediction maps, the per-pixel score inside the streaming
inference, and the ranking of regions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from activeseg.core.config import ConfigError
from activeseg.core.labels import LabelState
from activeseg.core.partition import partition_image
from activeseg.model.inference import mc_dropout_scores
from activeseg.model.network import EDConvNet
from activeseg.strategies import QueryContext, get_strategy
from activeseg.strategies.ripu import region_impurity


def probabilities(classes: list[list[int]], n_classes: int = 2) -> torch.Tensor:
    """(1, C, H, W) probabilities whose argmax is the given (H, W) class map (0.8 on the class)."""
    ids = torch.tensor(classes)
    p = torch.full((1, n_classes, *ids.shape), 0.2 / (n_classes - 1))
    return p.scatter(1, ids[None, None], 0.8)


def h(*counts: int) -> float:
    total = sum(counts)
    return -sum(c / total * math.log(c / total) for c in counts if c)


def test_impurity_of_a_3x3_map_is_the_entropy_of_the_class_shares_in_each_window():
    impurity = region_impurity(probabilities([[0, 0, 0], [0, 1, 1], [0, 1, 1]]), 3)[0]
    expected = [[h(3, 1), h(4, 2), h(2, 2)],   # corners and edges: the window clipped to the map
                [h(4, 2), h(5, 4), h(2, 4)],   # centre: the full 3 x 3 window, 5 background, 4 object
                [h(2, 2), h(2, 4), h(0, 4)]]   # 0.5623, 0.6365, 0.6931 / 0.6365, 0.6870, 0.6365 / 0.6931, 0.6365, 0
    np.testing.assert_allclose(impurity.numpy(), expected, atol=1e-6)
    assert impurity[1, 1] == pytest.approx(0.686962, abs=1e-6)


def test_impurity_is_zero_in_a_pure_region_and_log_3_where_three_classes_share_a_window():
    assert region_impurity(probabilities([[1] * 4] * 4), 3).abs().max() < 1e-9
    three = region_impurity(probabilities([[0, 1, 2]] * 3, n_classes=3), 3)[0]
    assert three[1, 1] == pytest.approx(math.log(3), abs=1e-6)
    wide = region_impurity(probabilities([[0, 0, 0, 0, 1]] * 5), 5)[0]
    assert wide[2, 2] == pytest.approx(h(20, 5), abs=1e-6)  # 5 x 5 window: 20 background, 5 object


def test_ripu_scores_are_the_reduced_impurity_times_entropy_maps(tiny_dataset):
    torch.manual_seed(0)
    model = EDConvNet(3, 2, width=4, depth=2, dropout=0.3)
    regions = partition_image(tiny_dataset.stems[0], 64, 64, 32, 0.5)[:5]
    strategy = get_strategy("ripu")
    torch.manual_seed(1)
    pool = mc_dropout_scores(model, tiny_dataset, regions, 3, 4, torch.device("cpu"),
                             keep_maps={r.id for r in regions}, hooks={"ripu": strategy.pixel_score})
    for i, r in enumerate(regions):
        maps = pool.maps[r.id]
        expected = region_impurity(torch.from_numpy(maps["mean_prob"])[None], 3)[0].numpy() * maps["entropy"]
        np.testing.assert_allclose(maps["ripu"], expected, rtol=1e-5, atol=1e-7)
        assert pool.extra["ripu"][i] == pytest.approx(float(expected.mean()), rel=1e-5)
    torch.manual_seed(1)
    ctx = QueryContext(regions, 2000, LabelState.empty({tiny_dataset.stems[0]: (64, 64)}), tiny_dataset,
                       np.random.default_rng(0),
                       score_pool=lambda regs, hooks=None: mc_dropout_scores(model, tiny_dataset, regs, 3, 4,
                                                                           torch.device("cpu"), hooks=hooks))
    scores = strategy.score(ctx)
    np.testing.assert_allclose(scores, pool.extra["ripu"], rtol=1e-5)
    selection = strategy.select(ctx)
    assert selection.indices[0] == int(np.argmax(scores)) and selection.spent <= 2000


def test_k_must_be_odd_and_at_least_3():
    with pytest.raises(ConfigError, match=r"^query\.options\.ripu\.k: must be odd \(a window centred on .*\), got 4$"):
        get_strategy("ripu", {"k": 4})
    with pytest.raises(ConfigError, match=r"^query\.options\.ripu\.k: must be at least 3, got 1$"):
        get_strategy("ripu", {"k": 1})
