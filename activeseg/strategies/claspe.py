"""``claspe``: ClaSP PE, class-stratified sampling with scheduled power noising of predictive entropy
(arXiv 2601.13677, TMLR; reference code MIC-DKFZ/nnActive, ``nnactive/strategies/entropy_balanced.py``,
``class_power_pe66_exp``), per region.

Per pixel, with p = mean_t p_t the mean of the T MC-dropout softmaxes and H = -sum_c p_c log p_c its
entropy (nnActive ``Probs.class_pred_entropy``):
- U_c = p_c x H for each foreground class c = 1..C-1 (class-weighted entropy), and U = H.
Per region:
- S_c and S, the means of U_c and U over the region's in-image pixels (``query.reduction``: mean by
  default, as the paper averages over the window);
- power noising (nnActive ``power_noising``): S'_c = log S_c + G and S' = log S + G, each G drawn
  independently from Gumbel(0, 1/beta_r);
- the schedule (``exponential_schedule(query_steps, 1, 100)``): beta_r = beta_max^((r-1)/(R-1)) for the
  r-th of R queries, so the first query is noisy (beta = 1) and the last almost greedy (beta_max).
Budget: ``foreground_share`` (0.66) of it is split equally over the K = C-1 foreground classes, each
taking its top regions by S'_c; the rest by S'. Binary: 66 % by p_fg x H, 34 % by H.

Decisions where the paper is open:
- Rounds: queries follow the first R_c - 1 rounds of a campaign of R_c = ``cfg.rounds`` rounds
  (``ctx.extras["cfg"]``), so R = R_c - 1 queries; the query's 0-based index ``ctx.extras["query_index"]``
  (the round that queries, counted from the campaign's first: rounds 0.. in a simulation, 1.. in a
  workspace; ``ctx.round_number`` when absent) is r - 1: beta = beta_max^((r - 1) / (R_c - 2)). With a single planned query (R <= 1)
  beta = 1, as the reference's schedule of one step; a query past the planned last one keeps beta_max.
- Budget in pixels, not patches: the foreground budget F = floor(share x B) of the pixel budget B; the
  classes go in an order shuffled by ``ctx.rng`` (as the reference shuffles them) and the k-th (0-based)
  gets an equal share of what the earlier ones left: floor((F - spent) / (K - k)). With equal-cost
  regions this is the reference's count: int(share x Q) regions over the classes, n // K each, the
  remainder one more to random classes. Then S' takes what is left of the whole budget (its 1 - share,
  the rounding and any unspent foreground pixels), the reference's Q - int(share x Q).
- A region is taken once: the passes share the pixels taken (``take_within``), so a region already
  taken by an earlier class costs nothing and is skipped, and overlapping regions pay only new pixels
  (the reference takes non-overlapping windows). If nothing fits at all, the top region by S' is taken
  alone (``fill_budget``).
- log of a zero score: the score is clamped to ``EPS`` first.
- One MC-dropout pass computes every U_c (a per-pixel hook per class) and H (the pass's entropy), so no
  map of the pool is kept.
- Each pick's reported score is the noisy score of the ranking that took it (S'_c or S').
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import torch

from activeseg.core.config import ClaspeOptions
from activeseg.model.inference import EPS, PixelMaps
from activeseg.strategies.base import QueryContext, Selection, Strategy, fill_budget, take_within
from activeseg.strategies.registry import register


def class_entropy(maps: PixelMaps, cls: int) -> torch.Tensor:
    """(B, h, w) U_c = p_c x H of class ``cls``, from ``mean_prob`` (B, C, h, w) and ``entropy`` (B, h, w)."""
    return maps.mean_prob[:, cls] * maps.entropy


def region_scores(ctx: QueryContext) -> tuple[np.ndarray, np.ndarray]:
    """(K, N) S_c of the K = C-1 foreground classes and (N,) S of the N candidates: the region reductions
    of U_c and H, from one MC-dropout pass."""
    hooks = {f"claspe_u{c}": partial(class_entropy, cls=c) for c in range(1, ctx.dataset.classes)}
    pool = ctx.pixel_scores(hooks)
    per_class = np.array([pool.extra[name] for name in hooks], np.float64).reshape(len(hooks), len(ctx.candidates))
    return per_class, np.asarray(pool.entropy, np.float64)


def beta_schedule(round_number: int, rounds: int, beta_max: float) -> float:
    """beta_r = beta_max^((r-1)/(R-1)) of the query after round ``round_number`` (0-based) of a campaign of
    ``rounds`` rounds: R = rounds - 1 queries, r - 1 = ``round_number``; 1 if R <= 1; beta_max past the last."""
    queries = rounds - 1
    if queries <= 1:
        return 1.0
    return float(beta_max ** min(round_number / (queries - 1), 1.0))


def power_noise(scores: np.ndarray, beta: float, rng: np.random.Generator) -> np.ndarray:
    """S' = log max(S, EPS) + G, G ~ Gumbel(0, 1/beta) independently per entry; the shape of ``scores``."""
    return np.log(np.maximum(scores, EPS)) + rng.gumbel(0.0, 1.0 / beta, size=np.shape(scores))


def descending(scores: np.ndarray) -> np.ndarray:
    return np.argsort(-scores, kind="stable")


def stratified_selection(class_scores: np.ndarray, scores: np.ndarray, ctx: QueryContext, share: float
                         ) -> Selection:
    """Spend the budget: its foreground ``share`` over the K classes by their (K, N) ``class_scores`` (in an
    order shuffled by ``ctx.rng``, each an equal part of what the earlier ones left), then the rest by the
    (N,) ``scores``, no pixel paid twice; see the module docstring."""
    taken: dict[str, np.ndarray] = {}
    picks: list[int] = []
    costs: list[int] = []
    reported: list[float] = []

    def take(ranking: np.ndarray, budget: int) -> None:
        took, paid = take_within(descending(ranking), ctx, budget, taken)
        picks.extend(took)
        costs.extend(paid)
        reported.extend(ranking[took].tolist())

    foreground = math.floor(share * ctx.budget + 1e-9)
    classes = ctx.rng.permutation(len(class_scores))
    for k, cls in enumerate(classes):
        take(class_scores[cls], (foreground - sum(costs)) // (len(classes) - k))
    take(scores, ctx.budget - sum(costs))
    if not picks:
        picks, costs = fill_budget(descending(scores), ctx)
        reported = scores[picks].tolist()
    return Selection(picks, reported, costs)


@register
class ClaspeStrategy(Strategy):
    name = "claspe"

    Options = ClaspeOptions

    def beta(self, ctx: QueryContext) -> float:
        if "cfg" not in ctx.extras:
            raise RuntimeError("claspe needs the query context's extras['cfg'] (the campaign's planned rounds) "
                               "for its noise schedule")
        index = ctx.extras.get("query_index", ctx.round_number)
        return beta_schedule(index, ctx.extras["cfg"].rounds, self.options.beta_max)

    def select(self, ctx: QueryContext) -> Selection:
        beta = self.beta(ctx)
        class_scores, scores = region_scores(ctx)
        noisy_classes, noisy = power_noise(class_scores, beta, ctx.rng), power_noise(scores, beta, ctx.rng)
        return stratified_selection(noisy_classes, noisy, ctx, self.options.foreground_share)
