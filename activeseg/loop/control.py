"""A control arm in a campaign: besides the strategy's picks, each round requests a share of its budget
(``query.control_fraction``) as regions drawn uniformly at random, the *controls*. When their labels land,
the model that chose the round's regions is scored on both: its Dice on the queried regions against its
Dice on the controls (a strategy that works asks for regions the model gets wrong), and, from the controls
alone, an estimate of its Dice on the unlabeled pool with a 95 % interval.

Estimand: the mean per-region Dice (:func:`region_dice`) of the model that queried, over the *pool the
strategy left*: the unlabeled candidates at query time (regions with a pixel not yet known) that the
strategy did not pick and that its picks do not cover whole. The controls are a simple random sample
without replacement of that population, so their mean Dice estimates it without bias. The strategy's
picks are left out of the population: they are about to be labeled, and a strategy picks the regions the
model gets wrong, so the pool they leave is what the model still has to segment.

Interval: the Wilson score interval of a mean of values in [0, 1] (:func:`pool_estimate`), not Student's t.
Per-region Dice is skewed, with point masses at 0 (a missed or invented object) and 1 (an empty region left
empty), and a round draws a handful of controls: a sample that misses the rare zeros has a high mean and a
small spread, and the t interval around it misses the pool. Measured on the synthetic default with 32 px
regions (the pools of six rounds of benchmarks/control_estimate.py, about 660 regions each, 1000 draws
each): t covers 61-72 % with 3 controls, 63-83 % with 5, 72-90 % with 8, 84-95 % with 20; the Wilson
interval 97-99 % at every size, and is narrower than t below about 10 controls. Wilson uses, instead of
the sample's spread, the largest variance a mean mu of [0, 1] values can have, mu (1 - mu), so it never
trusts a sample's lack of spread (and is conservative for a pool whose Dice varies little). Without the
finite-population correction, which would only narrow it.

How many controls: fixed before the draw, as many regions of the population's median cost as the control
budget buys, at least one (:func:`activeseg.strategies.base.affordable_count`). A draw that walked a random
order and skipped the regions no longer fitting what is left of the budget would favour cheap regions
(partly labeled ones, ones clipped at the image's edge) and bias the estimate. So the controls spend about
their share, not at most it; when one region costs more than the share, the round asks one region more
than its budget. A drawn region that earlier controls already cover whole is not asked twice (no pixel is
paid twice; with a handful of controls out of a pool this is rare).

Region Dice: the model's prediction over a region is the argmax of one deterministic forward pass (dropout
off) over the region's box, as the query reads a region (:func:`activeseg.model.evaluation.region_prediction`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np
import torch

from activeseg.core.config import Config
from activeseg.core.data import Dataset
from activeseg.core.partition import Region
from activeseg.metrics import dice
from activeseg.model.evaluation import region_prediction
from activeseg.model.network import EDConvNet
from activeseg.strategies.base import QueryContext, affordable_count, take_within

Z95 = NormalDist().inv_cdf(0.975)
"""The standard normal quantile of a two-sided 95 % interval, 1.96."""
CONTROL_STREAM = 22
"""Third word of the controls' seed, (seed, round, CONTROL_STREAM): apart from the strategy's (seed, round)
stream, so a random strategy and the controls never draw alike."""


def control_rng(seed: int, round_number: int) -> np.random.Generator:
    """The generator a round's controls are drawn from (see :data:`CONTROL_STREAM`)."""
    return np.random.default_rng([seed, round_number, CONTROL_STREAM])


def split_budget(budget: int, fraction: float) -> tuple[int, int]:
    """A round's pixel budget split into (the strategy's, the controls'): ``round(budget * fraction)`` for the
    controls, at most ``budget - 1`` (the strategy always gets a pixel), the rest for the strategy."""
    control = min(int(round(budget * fraction)), max(budget - 1, 0))
    return budget - control, control


def strategy_settings(cfg: Config, strategy_budget: int) -> Config:
    """``cfg`` with ``query.budget_pixels`` set to the strategy's share of the round's budget
    (:func:`split_budget`), the budget :func:`activeseg.loop.selection.select_regions` gives the strategy."""
    return cfg.model_copy(update={"query": cfg.query.model_copy(update={"budget_pixels": strategy_budget})})


def unpaid_pixels(ctx: QueryContext, index: int, taken: dict[str, np.ndarray]) -> int:
    """Pixels of candidate ``index`` neither known nor in ``taken`` (per image, (H, W) bool: known or taken
    this round, as :func:`activeseg.strategies.base.take_within` fills it)."""
    region = ctx.candidates[index]
    known = taken.get(region.stem, ctx.state.known[region.stem])
    ys, xs = region.clipped(*known.shape)
    return int((~known[ys, xs]).sum())


def pool_left(ctx: QueryContext, picked: Sequence[int]) -> tuple[list[int], dict[str, np.ndarray]]:
    """The population the controls are drawn from (module docstring): the indices into ``ctx.candidates``
    of the regions the strategy did not pick with a pixel neither known nor picked, ascending; and per image
    the (H, W) bool pixels known or picked (``taken``, as :func:`activeseg.strategies.base.take_within`
    fills it)."""
    taken: dict[str, np.ndarray] = {}
    take_within(np.asarray(picked, dtype=np.int64), ctx, ctx.state.total_pixels(), taken)  # the picks are paid
    chosen = set(picked)
    return [i for i in range(len(ctx.candidates)) if i not in chosen and unpaid_pixels(ctx, i, taken) > 0], taken


def draw_controls(ctx: QueryContext, picked: Sequence[int], budget: int, rng: np.random.Generator
                  ) -> tuple[list[int], list[int]]:
    """The round's controls (module docstring): indices into ``ctx.candidates`` in draw order and the pixels
    each newly reveals (beyond the known ones, the strategy's ``picked`` regions and the controls drawn
    before it); none with a ``budget`` of 0 or nothing left to draw from."""
    if budget <= 0:
        return [], []
    population, taken = pool_left(ctx, picked)
    costs = np.array([unpaid_pixels(ctx, i, taken) for i in population], dtype=np.int64)
    count = min(affordable_count(costs, budget), len(population))
    drawn = rng.choice(population, size=count, replace=False) if count else np.zeros(0, np.int64)
    return take_within(drawn, ctx, ctx.state.total_pixels(), taken)


def region_dice(pred: np.ndarray, truth: np.ndarray, classes: int) -> float:
    """Foreground Dice of one region: ``pred`` and ``truth`` (h, w) class ids. The mean, over the foreground
    classes (1 .. classes - 1) present in either mask, of that class's Dice (:func:`activeseg.metrics.dice`);
    1.0 when neither mask has any foreground (nothing to find and nothing found). With two classes: the
    binary Dice of foreground = class > 0. A class absent from both masks is left out rather than counted as
    1, so that a region of one foreground class is not lifted by the classes it does not hold."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"region_dice: prediction {pred.shape} and truth {truth.shape} differ in shape")
    present = [c for c in range(1, classes) if (pred == c).any() or (truth == c).any()]
    if not present:
        return 1.0
    return float(np.mean([dice(pred == c, truth == c) for c in present]))


def pool_estimate(dices: Sequence[float]) -> tuple[float, float | None, float | None]:
    """(mean, low, high): the controls' mean Dice m, the estimate of the pool's (module docstring), and its
    95 % Wilson score interval: the means mu with (m - mu)^2 <= z^2 mu (1 - mu) / n, z = 1.96, n controls,

        (m + z^2 / 2n  -+  z sqrt(m (1 - m) / n + z^2 / 4n^2)) / (1 + z^2 / n),

    always inside [0, 1]; (m, None, None) with a single control."""
    values = np.asarray(dices, dtype=float)
    n, mean = values.size, float(values.mean())
    if n < 2:
        return mean, None, None
    z2 = Z95**2 / n
    centre = (mean + z2 / 2) / (1 + z2)
    half = Z95 / (1 + z2) * math.sqrt(mean * (1 - mean) / n + z2 / (4 * n))
    return mean, max(0.0, centre - half), min(1.0, centre + half)


def region_dices(model: EDConvNet, dataset: Dataset, regions: Sequence[Region], truths: Sequence[np.ndarray],
                 device: torch.device) -> list[float]:
    """:func:`region_dice` of the model's prediction of each region against its truth ((h, w) class ids of
    the region's in-image part: accepted labels or the ground truth)."""
    return [region_dice(region_prediction(model, dataset, region, device), truth, dataset.classes)
            for region, truth in zip(regions, truths)]
