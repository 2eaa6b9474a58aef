"""``claspe``: the class-weighted entropy of hand-made probability maps, the scores of one streaming
MC-dropout pass, the beta schedule, the power noise, and the budget split between the foreground
classes and the entropy on hand-checked pools."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from activeseg.core.config import Config
from activeseg.core.labels import LabelState
from activeseg.core.partition import Region, partition_image
from activeseg.model.inference import EPS, PixelHook, PixelMaps, PoolScores, mc_dropout_scores, pixel_scores
from activeseg.model.network import EDConvNet
from activeseg.strategies import QueryContext, get_strategy
from activeseg.strategies.claspe import beta_schedule, class_entropy, power_noise, region_scores

SIDE = 4  # candidates are 4 x 4 patches side by side: 16 px each, none overlapping


def h(*p: float) -> float:
    return -sum(q * math.log(q) for q in p if q)


def constant_scorer(probs: dict[str, list[float]]):
    """A scorer whose model predicts the mean probabilities ``probs[region id]`` (C,) at every pixel of the
    region; it runs the hooks on those maps as the streaming pass does, and counts its passes."""
    def score(regions: list[Region], hooks: dict[str, PixelHook] | None = None) -> PoolScores:
        score.passes += 1
        p = torch.tensor([probs[r.id] for r in regions], dtype=torch.float64)[..., None, None]  # (N, C, 1, 1)
        entropy = -torch.special.xlogy(p, p).sum(1)
        maps = PixelMaps(p[None], p, entropy, torch.zeros_like(entropy), torch.zeros_like(entropy))
        extra = {name: hook(maps).flatten(1).mean(1).numpy() for name, hook in (hooks or {}).items()}
        zeros = np.zeros(len(regions))
        return PoolScores([r.id for r in regions], entropy.flatten().numpy(), zeros, zeros,
                          np.zeros((len(regions), 1), np.float32), extra=extra)
    score.passes = 0
    return score


def context(probs: list[list[float]], budget_regions: int, round_number: int = 1, rounds: int = 3,
            seed: int = 0) -> QueryContext:
    """Candidate i is the i-th 4 x 4 patch of one image, predicted ``probs[i]`` everywhere; the budget buys
    ``budget_regions`` of them; by default the last planned query (round 1 of 3: beta = beta_max)."""
    regions = [Region("a", 0, SIDE * i, SIDE, SIDE * (i + 1)) for i in range(len(probs))]
    return QueryContext(regions, SIDE * SIDE * budget_regions, LabelState.empty({"a": (SIDE, SIDE * len(probs))}),
                        SimpleNamespace(classes=len(probs[0])), np.random.default_rng(seed),
                        score_pool=constant_scorer({r.id: p for r, p in zip(regions, probs)}),
                        round_number=round_number, extras={"cfg": Config(rounds=rounds)})


GREEDY = {"beta_max": 1e12}  # Gumbel noise of scale 1e-12: the last query ranks by the scores themselves


def test_class_entropy_of_a_2x2_map_is_p_c_times_the_entropy():
    p = torch.tensor([[[0.5, 1 / 3], [0.25, 1.0]],   # class 0
                      [[0.5, 1 / 3], [0.25, 0.0]],   # class 1
                      [[0.0, 1 / 3], [0.5, 0.0]]])   # class 2
    maps = pixel_scores(torch.log(p).clamp_min(-1e4)[None, None])  # T = 1, B = 1; exp(-1e4) is exactly 0
    ln2, ln3 = math.log(2), math.log(3)
    np.testing.assert_allclose(maps.entropy[0].numpy(), [[ln2, ln3], [1.5 * ln2, 0]], atol=1e-6)
    np.testing.assert_allclose(class_entropy(maps, 1)[0].numpy(), [[ln2 / 2, ln3 / 3], [0.375 * ln2, 0]], atol=1e-6)
    np.testing.assert_allclose(class_entropy(maps, 2)[0].numpy(), [[0, ln3 / 3], [0.75 * ln2, 0]], atol=1e-6)


def test_one_pass_gives_the_reduced_class_entropy_and_entropy_maps(tiny_dataset):
    torch.manual_seed(0)
    model = EDConvNet(3, 2, width=4, depth=2, dropout=0.3)
    regions = partition_image(tiny_dataset.stems[0], 64, 64, 32, 0.5)[:5]
    calls = []

    def scorer(regs, hooks=None):
        calls.append(sorted(hooks or {}))
        return mc_dropout_scores(model, tiny_dataset, regs, 3, 4, torch.device("cpu"),
                                 keep_maps={r.id for r in regs}, hooks=hooks)

    ctx = QueryContext(regions, 2000, LabelState.empty({tiny_dataset.stems[0]: (64, 64)}), tiny_dataset,
                       np.random.default_rng(0), score_pool=scorer)
    per_class, entropy = region_scores(ctx)
    assert calls == [["claspe_u1"]] and per_class.shape == (1, 5)
    pool = scorer(regions)
    for i, r in enumerate(regions):
        maps = pool.maps[r.id]
        assert per_class[0, i] == pytest.approx(float((maps["mean_prob"][1] * maps["entropy"]).mean()), rel=1e-5)
        assert entropy[i] == pytest.approx(float(maps["entropy"].mean()), rel=1e-5)


@pytest.mark.parametrize("round_number, beta", [(0, 1.0), (1, 10 ** 0.5), (2, 10.0), (3, 10 ** 1.5), (4, 100.0),
                                                (7, 100.0)])
def test_beta_goes_geometrically_from_1_at_the_first_query_to_beta_max_at_the_last(round_number, beta):
    # 6 rounds: queries after rounds 0..4, R = 5; beta_r = 100^((r-1)/4); past the last query: beta_max
    assert beta_schedule(round_number, 6, 100.0) == pytest.approx(beta, rel=1e-12)


def test_beta_is_1_with_a_single_planned_query_and_beta_max_at_the_second_of_two():
    assert beta_schedule(0, 2, 100.0) == beta_schedule(0, 1, 100.0) == beta_schedule(3, 2, 100.0) == 1.0
    assert (beta_schedule(0, 3, 100.0), beta_schedule(1, 3, 100.0)) == (1.0, 100.0)


def test_power_noise_is_the_log_score_plus_gumbel_of_scale_one_over_beta():
    scores = np.array([[0.5, 0.0], [2.0, 1e-3]])
    noisy = power_noise(scores, 4.0, np.random.default_rng(7))
    gumbel = np.random.default_rng(7).gumbel(0.0, 0.25, size=(2, 2))
    np.testing.assert_allclose(noisy, np.log([[0.5, EPS], [2.0, 1e-3]]) + gumbel, rtol=1e-12)
    np.testing.assert_allclose(power_noise(scores, 1e12, np.random.default_rng(7)), np.log(np.maximum(scores, EPS)),
                               atol=1e-9)


# p_fg of 16 candidates; H = h(p, 1 - p) and U_fg = p H, by hand:
#  id   0     1     2     3     4     5     6     7     8     9     10    11    12    13    14    15
#  p   .06   .52   .88   .70   .31   .77   .47   .16   .57   .36   .62   .21   .82   .44   .26   .11
#  H   .227  .6923 .3669 .6109 .6191 .5393 .6913 .4397 .6833 .6534 .6641 .514  .4714 .6859 .5731 .3465
#  U   .0136 .36   .3229 .4276 .1919 .4152 .3249 .0703 .3895 .2352 .4117 .1079 .3865 .3018 .149  .0381
# by U: 3 5 10 8 12 1 | 6 2 13 ...    by H: 1 6 13 8 10 9 4 3 14 5 ...
P_FG = [0.06, 0.52, 0.88, 0.7, 0.31, 0.77, 0.47, 0.16, 0.57, 0.36, 0.62, 0.21, 0.82, 0.44, 0.26, 0.11]
BINARY = [[1 - p, p] for p in P_FG]


def test_scores_of_the_binary_pool_are_p_fg_times_h_and_h():
    per_class, entropy = region_scores(context(BINARY, 10))
    np.testing.assert_allclose(entropy, [h(p, 1 - p) for p in P_FG], rtol=1e-12)
    np.testing.assert_allclose(per_class[0], [p * h(p, 1 - p) for p in P_FG], rtol=1e-12)
    assert per_class[0, 3] == pytest.approx(0.4276, abs=1e-4) and entropy[1] == pytest.approx(0.6923, abs=1e-4)


def test_the_last_query_takes_6_regions_by_the_foreground_score_then_4_by_entropy():
    # budget 10 x 16 = 160 px; foreground: floor(0.66 x 160) = 105 px, 6 regions (96 px; a 7th would need
    # 112), as the reference's int(0.66 x 10) = 6; the 64 px left buy 4 by H, skipping 1, 8, 10 (taken)
    ctx = context(BINARY, 10)
    selection = get_strategy("claspe", GREEDY).select(ctx)
    assert selection.indices == [3, 5, 10, 8, 12, 1, 6, 13, 9, 4]
    assert selection.costs == [16] * 10 and ctx.score_pool.passes == 1
    by_foreground, by_entropy = (3, 5, 10, 8, 12, 1), (6, 13, 9, 4)  # each reported with its noisy log score
    np.testing.assert_allclose(selection.scores[:6], [math.log(P_FG[i] * h(P_FG[i], 1 - P_FG[i]))
                                                      for i in by_foreground])
    np.testing.assert_allclose(selection.scores[6:], [math.log(h(P_FG[i], 1 - P_FG[i])) for i in by_entropy])


@pytest.mark.parametrize("share, expected", [(0.0, [1, 6, 13, 8, 10, 9, 4, 3, 14, 5]),    # all by H
                                             (1.0, [3, 5, 10, 8, 12, 1, 6, 2, 13, 9])])   # all by U_fg
def test_the_foreground_share_moves_the_split(share, expected):
    selection = get_strategy("claspe", {**GREEDY, "foreground_share": share}).select(context(BINARY, 10))
    assert selection.indices == expected


def test_the_first_query_is_noisy_and_the_last_greedy_whatever_the_seed():
    first = {tuple(get_strategy("claspe", GREEDY).select(context(BINARY, 4, round_number=0, seed=s)).indices)
             for s in range(8)}
    last = {tuple(get_strategy("claspe", GREEDY).select(context(BINARY, 4, round_number=1, seed=s)).indices)
            for s in range(8)}
    assert len(first) > 1  # beta = 1: Gumbel(0, 1) noise reorders log scores that differ by less than ~1
    assert last == {(3, 5, 1, 6)}  # floor(0.66 x 64) = 42 px: 2 regions by U_fg (3, 5), the other 2 by H


def test_four_foreground_classes_share_6_regions_as_1_1_2_2_then_4_go_by_entropy():
    # 3 candidates leaning to each foreground class c = 1..4 (p_c = 0.6 / 0.55 / 0.5, the rest spread
    # evenly), then 4 nearly uniform ones (the highest H, and a U_c below every leaning candidate of c)
    def leaning(c: int, p: float) -> list[float]:
        return [p if k == c else (1 - p) / 4 for k in range(5)]

    probs = [leaning(c, p) for c in range(1, 5) for p in (0.6, 0.55, 0.5)]
    probs += [[0.2, 0.2, 0.2, 0.2, 0.2], [0.19, 0.21, 0.2, 0.2, 0.2], [0.2, 0.19, 0.21, 0.2, 0.2],
              [0.2, 0.2, 0.19, 0.21, 0.2]]
    selection = get_strategy("claspe", GREEDY).select(context(probs, 10))
    by_class = [i // 3 + 1 for i in selection.indices[:6]]
    # floor(0.66 x 160) = 105 px; in the shuffled order, floor(105/4) = 26 px: 1 region, floor(89/3) = 29: 1,
    # floor(73/2) = 36: 2, floor(41/1) = 41: 2 -- the reference's 6 // 4 = 1 each, 2 more to random classes
    assert [by_class.count(c) for c in dict.fromkeys(by_class)] == [1, 1, 2, 2]
    assert selection.indices[:6] == sorted(selection.indices[:6], key=lambda i: (by_class.index(i // 3 + 1), i))
    assert sorted(selection.indices[6:]) == [12, 13, 14, 15]


def test_nothing_fits_takes_the_top_region_by_entropy_alone():
    ctx = context(BINARY, 10)
    ctx.budget = 10  # under one 16 px region
    selection = get_strategy("claspe", GREEDY).select(ctx)
    assert (selection.indices, selection.costs) == ([1], [16])


def test_claspe_needs_the_campaigns_planned_rounds():
    ctx = context(BINARY, 10)
    ctx.extras = {}
    with pytest.raises(RuntimeError, match=r"claspe needs the query context's extras\['cfg'\]"):
        get_strategy("claspe").select(ctx)
