"""``ceal``: cost-effective active learning (Gorriz et al. 2017, as followed by Jethaliya, Sect. 4).

Uncertainty u per region = MC-dropout variance (``ctx.pool.variance``: per pixel the variance across
T = ``query.mc_passes`` passes, averaged over classes, then the mean over the region's in-image pixels).
Gorriz and Jethaliya sum over pixels; with a pixel budget the mean does not favour large regions.

Oracle groups (Jethaliya Sect. 4.2), each given a share of the round's pixel budget proportional to
``low_weight`` : ``middle_weight`` : ``high_weight`` (default 10 : 15 : 10, Jethaliya's 10, 15 and 10
samples; shares are rounded to pixels by largest remainder, so they sum exactly to the budget):
1. ``low``: lowest uncertainty first (objects the model misses entirely: confident and wrong);
2. ``middle``: random among the candidates in the middle of the uncertainty histogram, read as u within
   the central ``middle_width`` of [min u, max u] (the papers do not say how wide the middle is);
3. ``high``: highest uncertainty first.
The groups are filled in this order and what one leaves unspent (the next region did not fit, or the
middle was too thin) is carried to the next, so the budget is spent as far as regions fit.

Pseudo-labels (Jethaliya's group 4): the uncertainty histogram has ``bins`` equal-width bins over
[min u, max u]; from its modal bin (most candidates; the lower bin on ties), the candidates not picked
by the oracle and not fully revealed by its picks are taken lowest uncertainty first,
ceil(``pseudo_fraction`` x their number) of them. Jethaliya takes 20 x iteration samples, Gorriz does
not give a count: a fraction of the modal bin adapts to the pool size. Mask = argmax of the MC-mean
prediction (T passes, seeded from ``ctx.rng``). They replace the previous round's pseudo-labels, are
never counted as cost, and weigh ``train.pseudo_weight`` in the loss (see ``strategies.pseudo``).
Gorriz fine-tunes each round instead of retraining: ``train.mode: finetune`` gives that.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from activeseg.core.config import CealOptions
from activeseg.model.inference import mc_dropout_scores
from activeseg.core.partition import Region
from activeseg.strategies.base import QueryContext, Selection, Strategy, fill_budget, take_within
from activeseg.strategies.pseudo import open_pixels_after
from activeseg.strategies.registry import register


def histogram_bins(u: np.ndarray, bins: int) -> np.ndarray:
    """(N,) bin of each value among ``bins`` equal-width bins over [min u, max u] (last bin closed)."""
    u = np.asarray(u, np.float64)
    lo, hi = float(u.min()), float(u.max())
    if hi <= lo:
        return np.zeros(len(u), np.int64)
    return np.minimum((u - lo) / (hi - lo) * bins, bins - 1).astype(np.int64)


def modal_bin(u: np.ndarray, bins: int) -> np.ndarray:
    """Indices in the most populated bin (the lowest such bin on ties), by increasing uncertainty."""
    which = histogram_bins(u, bins)
    mode = int(np.argmax(np.bincount(which, minlength=bins)))
    members = np.flatnonzero(which == mode)
    return members[np.argsort(np.asarray(u)[members], kind="stable")]


def pseudo_candidates(u: np.ndarray, excluded: np.ndarray, bins: int, fraction: float) -> np.ndarray:
    """The modal bin's members not ``excluded`` (bool (N,)), most confident first, ceil(fraction x n) of them."""
    members = [i for i in modal_bin(u, bins) if not excluded[i]]
    return np.array(members[: math.ceil(fraction * len(members))], np.int64)


def group_budgets(budget: int, weights: Sequence[float]) -> list[int]:
    """Split ``budget`` pixels proportionally to ``weights``; largest remainder, sums exactly to budget."""
    w = np.asarray(weights, np.float64)
    exact = budget * w / w.sum()
    shares = np.floor(exact).astype(np.int64)
    for i in np.argsort(-(exact - shares), kind="stable")[: budget - int(shares.sum())]:
        shares[i] += 1
    return shares.tolist()


def group_orders(u: np.ndarray, middle_width: float, rng: np.random.Generator) -> list[np.ndarray]:
    """[low, middle, high]: ascending u; a random order of the middle candidates; descending u."""
    u = np.asarray(u, np.float64)
    lo, hi = float(u.min()), float(u.max())
    margin = (1 - middle_width) / 2 * (hi - lo)
    middle = np.flatnonzero((u >= lo + margin) & (u <= hi - margin))
    return [np.argsort(u, kind="stable"), rng.permutation(middle), np.argsort(-u, kind="stable")]


def fill_groups(orders: Sequence[np.ndarray], budgets: Sequence[int], ctx: QueryContext) -> tuple[list[int], list[int]]:
    """Fill each group from its order within its budget plus what the previous groups left; costs
    count each pixel once across groups. Returns (indices, incremental costs)."""
    taken: dict[str, np.ndarray] = {}
    picks: list[int] = []
    costs: list[int] = []
    left = 0
    for order, budget in zip(orders, budgets):
        group_picks, group_costs = take_within(order, ctx, left + budget, taken)
        picks += group_picks
        costs += group_costs
        left += budget - sum(group_costs)
    return picks, costs


def mc_mean_masks(ctx: QueryContext, regions: list[Region]) -> list[np.ndarray]:
    """(h, w) uint8 argmax of the MC-mean prediction of each region's in-image part."""
    if not regions:
        return []
    cfg, model, device = ctx.extras["cfg"], ctx.extras["model"], ctx.extras["device"]
    scores = mc_dropout_scores(model, ctx.dataset, regions, cfg.query.mc_passes, cfg.query.batch_size,
                               device, keep_maps={r.id for r in regions}, seed=int(ctx.rng.integers(2**31)))
    return [scores.maps[r.id]["mean_prob"].argmax(0).astype(np.uint8) for r in regions]


@register
class CealStrategy(Strategy):
    name = "ceal"

    Options = CealOptions

    def select(self, ctx: QueryContext) -> Selection:
        o = self.options
        u = np.asarray(ctx.pool.variance, np.float64)
        orders = group_orders(u, o.middle_width, ctx.rng)
        budgets = group_budgets(ctx.budget, (o.low_weight, o.middle_weight, o.high_weight))
        picks, costs = fill_groups(orders, budgets, ctx)
        if not picks:
            picks, costs = fill_budget(orders[2], ctx)
        excluded = open_pixels_after(ctx, picks, ctx.candidates) == 0
        excluded[picks] = True
        regions = [ctx.candidates[i] for i in pseudo_candidates(u, excluded, o.bins, o.pseudo_fraction)]
        pseudo = list(zip(regions, mc_mean_masks(ctx, regions)))
        return Selection(picks, [float(u[i]) for i in picks], costs, pseudo=pseudo,
                         pseudo_origin=ctx.model_id, replace_pseudo=True)
