"""``bsq``: Bayesian sample queries (Ozdemir et al. 2021, Sect. 2.2-2.4).

1. Uncertainty (Eq. 2): MC-dropout variance (``ctx.pool.variance``: per pixel the variance across the
   T passes averaged over classes, then the mean over the region's in-image pixels). S_unc = the
   ``n_unc`` most uncertain candidates: n_unc <= 1 is a fraction of the candidates (rounded up),
   n_unc > 1 a count (the paper: n_unc = 64 slices for n_rep = 32).
2. Representativeness (Eq. 3-8): an infoVAE (:mod:`activeseg.model.infovae`) trained on every region of the
   training pool, labeled or not, maps each region to a latent code z. A diagonal Gaussian is fitted to
   the codes of the annotated regions (mu_an, sigma_an) and to those of the whole pool (mu_pool,
   sigma_pool). Per latent dimension i, Eq. 8 gives the two-sided tail probability

       p_X,i(z) = 1 + erf(-|z_i - mu_X,i| / (sigma_X,i sqrt 2)) = erfc(|z_i - mu_X,i| / (sigma_X,i sqrt 2)),

   and s(x) = sum_i log(p_an,i + 1e-10) - sum_i log(p_pool,i + 1e-10), the logarithm of Eq. 7's ratio
   turned over: the lowest s is the sample the pool explains much better than the annotated set.
3. S_unc is ranked by increasing s and taken while the pixel budget lasts (n_rep is what the budget
   buys); if S_unc cannot spend it, the other candidates follow by decreasing uncertainty.

Decisions the paper leaves open (and two bugs of the reference code not copied):
- The annotated set = the pool regions with every pixel known (every oracle-labeled region among them).
- sigma_pool is the std of the pool's codes (the reference code takes it from the annotated set).
  sigma_an is floored per dimension at ``sigma_floor`` x sigma_pool, so a single annotated region
  (sigma = 0) gives a narrow Gaussian instead of a division by zero. Population stds (ddof = 0).
- The infoVAE inputs are normalised the same way at training and query time (the reference code skips
  it at query time); see :mod:`activeseg.model.infovae` for its architecture, loss and kernel width.
- The infoVAE has its own seed (``vae_seed``), independent of the campaign seed, and is trained once
  per pool: it is kept in ``ctx.extras["cache_dir"]`` (``simulate`` passes ``OUT/cache``) under a key
  of the pool's region ids, image pixels and the VAE parameters. Without a cache dir it is retrained
  at every query.
- Whole-slide images (:mod:`activeseg.core.slides`) are refused at the start of the query with a
  ``ConfigError``: the cache key hashes each pool image's pixels whole, and a slide is read per region.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy.special import erfc

from activeseg.core.config import BsqOptions, InfoVAESettings
from activeseg.model.infovae import InfoVAEParams, encode, load_or_train
from activeseg.core.pool import pool_regions
from activeseg.strategies.base import QueryContext, Selection, Strategy, fill_budget
from activeseg.strategies.registry import register

LOG_EPS = 1e-10


def tail_probability(z: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Eq. 8 per latent dimension: erfc(|z - mu| / (sigma sqrt 2)); z (N, d), mu and sigma (d,) > 0."""
    return erfc(np.abs(z - mu) / (sigma * math.sqrt(2)))


def likelihood_ratio_scores(z: np.ndarray, z_an: np.ndarray, z_pool: np.ndarray, sigma_floor: float) -> np.ndarray:
    """s (N,) of codes z (N, d) given the annotated codes (M, d), M >= 1, and the pool's codes (P, d)."""
    if len(z_an) == 0:
        raise ValueError("bsq needs at least one annotated region to fit the annotated Gaussian")
    sigma_pool = np.maximum(z_pool.std(0), 1e-12)
    sigma_an = np.maximum(z_an.std(0), sigma_floor * sigma_pool)
    p_an = tail_probability(z, z_an.mean(0), sigma_an)
    p_pool = tail_probability(z, z_pool.mean(0), sigma_pool)
    return np.log(p_an + LOG_EPS).sum(1) - np.log(p_pool + LOG_EPS).sum(1)


def uncertain_count(n_unc: float, n: int) -> int:
    """|S_unc| among n candidates: ceil(n_unc x n) for a fraction n_unc <= 1, else min(n_unc, n)."""
    return min(n, math.ceil(n_unc * n) if n_unc <= 1 else int(n_unc))


def bsq_order(uncertainty: np.ndarray, scores: np.ndarray, n_unc: int) -> np.ndarray:
    """The ``n_unc`` most uncertain by increasing score, then the rest by decreasing uncertainty."""
    by_uncertainty = np.argsort(-np.asarray(uncertainty, np.float64), kind="stable")
    s_unc, rest = by_uncertainty[:n_unc], by_uncertainty[n_unc:]
    return np.concatenate([s_unc[np.argsort(np.asarray(scores)[s_unc], kind="stable")], rest])


@register
class BsqStrategy(Strategy):
    name = "bsq"

    Options = BsqOptions

    def __init__(self, options: dict[str, Any] | None = None):
        super().__init__(options)
        vae = self.options.model_dump(include=set(InfoVAESettings.model_fields))
        self.vae_params = InfoVAEParams(**vae, seed=self.options.vae_seed)

    def select(self, ctx: QueryContext) -> Selection:
        self.refuse_slides(ctx, ctx.extras["split"]["train"], "its infoVAE cache key hashes every pool image's "
                           "pixels whole")
        pool = pool_regions(ctx.dataset, ctx.extras["split"]["train"], ctx.extras["cfg"])
        index = {r.id: j for j, r in enumerate(pool)}
        missing = [r.id for r in ctx.candidates if r.id not in index]
        if missing:
            raise ValueError(f"bsq: candidate {missing[0]} is not a region of the training pool")
        device = ctx.extras.get("device", torch.device("cpu"))
        model, x = load_or_train(ctx.dataset, pool, self.vae_params, device, ctx.extras.get("cache_dir"))
        z_pool = encode(model, x, device).astype(np.float64)
        annotated = np.array([ctx.state.new_pixels(r) == 0 for r in pool])
        z_cand = z_pool[[index[r.id] for r in ctx.candidates]]
        scores = likelihood_ratio_scores(z_cand, z_pool[annotated], z_pool, self.options.sigma_floor)
        n_unc = uncertain_count(self.options.n_unc, len(ctx.candidates))
        picks, costs = fill_budget(bsq_order(ctx.pool.variance, scores, n_unc), ctx)
        return Selection(picks, [float(scores[i]) for i in picks], costs)
