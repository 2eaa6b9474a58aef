"""The control arm's pure parts (activeseg.loop.control): the budget split, the draw of the controls, the Dice
of a region and the estimate of the pool's mean Dice with its interval."""

from __future__ import annotations

import numpy as np
import pytest

from activeseg.core.labels import LabelState
from activeseg.core.partition import Region, partition_image
from activeseg.loop.control import control_rng, draw_controls, pool_estimate, region_dice, split_budget
from activeseg.strategies.base import QueryContext


def test_the_budget_is_split_between_strategy_and_controls() -> None:
    assert split_budget(2048, 0.1) == (1843, 205)
    assert split_budget(2048, 0.0) == (2048, 0)
    assert split_budget(1, 0.9) == (1, 0)  # the strategy always keeps a pixel
    assert split_budget(10, 0.99) == (1, 9)


def test_region_dice_by_hand() -> None:
    empty, two = np.zeros((2, 2), np.uint8), np.array([[1, 1], [0, 0]], np.uint8)
    assert region_dice(empty, empty, 2) == 1.0  # nothing to find and nothing found
    assert region_dice(empty, two, 2) == 0.0  # a model that predicts background misses the region's foreground
    assert region_dice(two, empty, 2) == 0.0
    assert region_dice(np.array([[1, 0], [0, 0]]), two, 2) == pytest.approx(2 / 3)  # 2 x 1 / (1 + 2)
    assert region_dice(np.array([[0, 1], [1, 0]]), two, 2) == 0.5  # 2 x 1 / (2 + 2)
    assert region_dice(np.array([[2, 2], [0, 0]]), two, 3) == 0.0  # the wrong class: neither class right
    # three classes: class 2 in neither mask is left out, not counted as a perfect 1
    assert region_dice(np.array([[1, 0], [0, 0]]), two, 3) == pytest.approx(2 / 3)
    assert region_dice(np.array([[1, 1], [2, 0]]), np.array([[1, 1], [2, 2]]), 3) == pytest.approx((1 + 2 / 3) / 2)
    with pytest.raises(ValueError, match="differ in shape"):
        region_dice(empty, np.zeros((2, 3)), 2)


def test_the_interval_covers_the_pool_mean_in_at_least_90_percent_of_random_draws() -> None:
    """A pool of 300 region Dice values like a model's on the synthetic default (7 % zeros: missed or invented
    objects; the rest skewed towards 1); 200 simple random samples of 5 controls, as a campaign draws them."""
    rng = np.random.default_rng(0)
    pool = np.concatenate([np.zeros(20), rng.beta(5, 1.5, 280)])
    covered = 0
    for _ in range(200):
        mean, low, high = pool_estimate(rng.choice(pool, 5, replace=False))
        covered += low <= pool.mean() <= high
    assert covered == 199  # seeded (Student's t on the same draws: 180)
    assert covered >= 180


def test_the_interval_is_wilson_s_and_a_single_control_gives_none() -> None:
    assert pool_estimate([0.25]) == (0.25, None, None)
    mean, low, high = pool_estimate([0.5, 0.6, 0.7])  # centre (0.6 + 1.92 / 3) / 2.28, half 0.859 x 0.432
    assert (mean, low, high) == (pytest.approx(0.6), pytest.approx(0.17249, abs=1e-5), pytest.approx(0.91522, abs=1e-5))
    assert pool_estimate([1.0] * 4) == (1.0, pytest.approx(4 / (4 + 1.959964**2)), 1.0)  # never of width 0
    assert pool_estimate([0.0, 1.0]) == (0.5, pytest.approx(0.0945, abs=1e-4), pytest.approx(0.9055, abs=1e-4))


def context(known: dict[str, np.ndarray]) -> QueryContext:
    """Candidates: the 32 x 32 patches (overlap 0.5) of two 64 x 64 images with ``known`` pixels."""
    state = LabelState.empty({stem: (64, 64) for stem in known})
    for stem, mask in known.items():
        state.known[stem][:] = mask
    candidates = [r for stem in known for r in partition_image(stem, 64, 64, 32, 0.5)]
    return QueryContext(candidates=[r for r in candidates if state.new_pixels(r) > 0], budget=0, state=state,
                        dataset=None, rng=np.random.default_rng(0))


def test_controls_are_drawn_at_random_from_what_the_strategy_left_and_never_pay_twice() -> None:
    known = np.zeros((64, 64), bool)
    known[:32, :32] = True  # patch a/(0, 0) is labeled: not a candidate; its neighbours are half labeled
    ctx = context({"a": known, "b": np.zeros((64, 64), bool)})
    assert len(ctx.candidates) == 17
    picked = [ctx.candidates.index(Region("b", 0, 0, 32, 32)), ctx.candidates.index(Region("b", 32, 32, 64, 64))]
    controls, costs = draw_controls(ctx, picked, 3000, control_rng(0, 1))
    assert len(controls) == 3  # 3000 pixels buy three regions of the median cost left, 768
    assert not set(controls) & set(picked) and len(set(controls)) == 3
    assert (controls, costs) == draw_controls(ctx, picked, 3000, control_rng(0, 1))  # seeded
    paid = {stem: ctx.state.known[stem].copy() for stem in ("a", "b")}
    for i in [*picked, *controls]:
        region = ctx.candidates[i]
        paid[region.stem][region.y0:region.y1, region.x0:region.x1] = True
    assert sum(costs) + 2 * 1024 == sum((~ctx.state.known[s]).sum() - (~paid[s]).sum() for s in paid)
    assert draw_controls(ctx, picked, 0, control_rng(0, 1)) == ([], [])
    assert len(draw_controls(ctx, picked, 100, control_rng(0, 1))[0]) == 1  # at least one control


def test_the_controls_are_uniform_over_the_regions_the_picks_leave() -> None:
    """Over many rounds every region the strategy left is drawn about equally often, the cheap ones no more
    than the others; a region the picks and the known pixels cover whole is never drawn."""
    known = np.zeros((64, 64), bool)
    known[:32, :32] = True
    ctx = context({"a": known})  # 8 candidates (the labeled top-left patch is none)
    picked = [ctx.candidates.index(Region("a", 0, 32, 32, 64)), ctx.candidates.index(Region("a", 32, 0, 64, 32))]
    covered = [ctx.candidates.index(Region("a", 0, 16, 32, 48)), ctx.candidates.index(Region("a", 16, 0, 48, 32))]
    left = {ctx.candidates.index(Region("a", y, x, y + 32, x + 32)): cost
            for (y, x), cost in {(16, 16): 256, (16, 32): 512, (32, 16): 512, (32, 32): 1024}.items()}
    counts = np.zeros(len(ctx.candidates), int)
    for n in range(600):
        controls, costs = draw_controls(ctx, picked, 512, control_rng(0, n))  # the median cost: one control
        assert len(controls) == 1 and costs == [left[controls[0]]]
        counts[controls] += 1
    assert counts[picked + covered].sum() == 0
    assert all(105 < counts[i] < 195 for i in left)  # 150 expected each


def test_a_control_budget_past_the_pool_pays_every_pixel_left_once() -> None:
    """Every region left is drawn; one that the controls drawn before it cover whole is not asked again."""
    ctx = context({"a": np.zeros((64, 64), bool)})
    controls, costs = draw_controls(ctx, [0], 10**6, control_rng(0, 1))
    assert set(controls) < set(range(1, 9)) and 0 not in costs and sum(costs) == 64 * 64 - 32 * 32
