"""``random_fg``: the predicted-foreground indicator of hand-made maps and its region reductions, and the
ranking: candidates predicted to hold foreground first, uniform random within each group."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from activeseg.core.labels import LabelState
from activeseg.core.partition import partition_image
from activeseg.model.inference import RegionReduction, mc_dropout_scores, pixel_scores
from activeseg.model.network import EDConvNet
from activeseg.strategies import QueryContext, get_strategy
from activeseg.strategies.random_fg import predicted_foreground
from tests.strategies.test_claspe import context


def maps_of(p: list) -> torch.Tensor:
    """(C, H, W) probabilities -> the (1, H, W) predicted-foreground map, through the streaming pass's maps."""
    return predicted_foreground(pixel_scores(torch.log(torch.tensor(p))[None, None]))


def test_the_indicator_is_1_where_the_argmax_is_a_foreground_class():
    p = [[[0.6, 0.2], [0.3, 0.1]],   # background
         [[0.3, 0.7], [0.3, 0.1]],   # class 1
         [[0.1, 0.1], [0.4, 0.8]]]   # class 2
    np.testing.assert_array_equal(maps_of(p)[0].numpy(), [[0, 1], [1, 1]])


@pytest.mark.parametrize("reduction", [RegionReduction("mean"), RegionReduction("top", 0.1)])
def test_one_foreground_pixel_makes_the_region_score_positive_for_either_reduction(reduction):
    background = np.zeros((2, 4, 4))
    background[0] = 0.9
    background[1] = 0.1
    one = background.copy()
    one[:, 2, 3] = [0.4, 0.6]  # argmax foreground at one pixel of 16
    assert reduction(maps_of(background.tolist())[0]) == 0
    assert reduction(maps_of(one.tolist())[0]) == {"mean": 1 / 16, "top": 0.5}[reduction.kind]  # top: ceil(1.6) = 2 px


def test_the_hook_runs_inside_the_streaming_pass(tiny_dataset):
    torch.manual_seed(0)
    model = EDConvNet(3, 2, width=4, depth=2, dropout=0.3)
    regions = partition_image(tiny_dataset.stems[0], 64, 64, 32, 0.5)[:5]
    pool = mc_dropout_scores(model, tiny_dataset, regions, 3, 4, torch.device("cpu"),
                             keep_maps={r.id for r in regions}, hooks={"random_fg": predicted_foreground})
    for i, r in enumerate(regions):
        expected = (pool.maps[r.id]["mean_prob"].argmax(0) != 0).astype(np.float32)
        np.testing.assert_array_equal(pool.maps[r.id]["random_fg"], expected)
        assert pool.extra["random_fg"][i] == pytest.approx(float(expected.mean()))
    ctx = QueryContext(regions, 2000, LabelState.empty({tiny_dataset.stems[0]: (64, 64)}), tiny_dataset,
                       np.random.default_rng(0),
                       score_pool=lambda regs, hooks=None: mc_dropout_scores(model, tiny_dataset, regs, 3, 4,
                                                                           torch.device("cpu"), hooks=hooks))
    selection = get_strategy("random_fg").select(ctx)
    assert [s >= 1 for s in selection.scores] == [bool(pool.extra["random_fg"][i] > 0) for i in selection.indices]


FOREGROUND = {1, 4, 6, 9, 11}  # candidates predicted 0.7 foreground; the other seven 0.2
PROBS = [[0.3, 0.7] if i in FOREGROUND else [0.8, 0.2] for i in range(12)]


@pytest.mark.parametrize("seed", range(6))
def test_no_background_only_candidate_is_picked_while_a_foreground_one_fits(seed):
    few = get_strategy("random_fg").select(context(PROBS, 3, seed=seed))
    assert len(few.indices) == 3 and set(few.indices) <= FOREGROUND
    many = get_strategy("random_fg").select(context(PROBS, 8, seed=seed))
    assert set(many.indices[:5]) == FOREGROUND and not set(many.indices[5:]) & FOREGROUND and len(many.indices) == 8
    assert all(1 <= s < 2 for s in many.scores[:5]) and all(0 <= s < 1 for s in many.scores[5:])


def test_the_order_within_the_foreground_is_random():
    firsts = {get_strategy("random_fg").select(context(PROBS, 1, seed=s)).indices[0] for s in range(20)}
    assert firsts == FOREGROUND


def test_with_no_predicted_foreground_it_is_uniform_random_over_all_candidates():
    background = [[0.8, 0.2]] * 12
    for seed in range(4):
        ours = get_strategy("random_fg").select(context(background, 5, seed=seed))
        plain = get_strategy("random").select(context(background, 5, seed=seed))
        assert ours.indices == plain.indices  # the same uniform draw as ``random``


def test_random_fg_needs_a_model():
    assert get_strategy("random_fg").needs_model
