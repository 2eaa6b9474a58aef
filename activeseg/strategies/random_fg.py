"""``random_fg``: foreground-aware random, the stronger random baseline of nnActive (arXiv 2511.19183),
which no AL method there reliably beats.

A candidate holds predicted foreground when the current model predicts a foreground class at one of its
in-image pixels at least: per pixel, F(i) = 1 if argmax_c p_c(i) != 0 else 0, with p = mean_t p_t the
MC-averaged prediction; per region, its reduction (``query.reduction``) is > 0 exactly when F = 1
somewhere in the region, for the mean as for the top reduction (whose top pixels then include a 1).
Ranking: the candidates holding predicted foreground in a uniformly random order, then the others in a
uniformly random order, taken while they fit the budget (``fill_budget``). When no candidate holds
predicted foreground (a model that predicts background everywhere), this is uniform random over all
candidates, as ``random``.

Decisions where the source is open:
- nnActive's foreground-aware random draws patches around ground-truth foreground (its ``random-label``
  strategies read the labels); with no labels of the pool here, the current model's prediction stands in
  for them, so the strategy needs a model.
- The predicted class is the argmax of the MC-averaged prediction, computed inside the streaming
  MC-dropout loop by a per-pixel hook (``QueryContext.pixel_score``), so no map of the pool is kept.
- Each pick's reported score is its random key: in [1, 2) for a foreground candidate, [0, 1) otherwise.
  The keys are no score of the region, so the strategy picks (``select``) and offers no ``score`` to
  ``powerbald`` or ``stochastic_batches``.
"""

from __future__ import annotations

import numpy as np
import torch

from activeseg.model.inference import PixelMaps
from activeseg.strategies.base import QueryContext, Selection, Strategy, fill_budget
from activeseg.strategies.registry import register


def predicted_foreground(maps: PixelMaps) -> torch.Tensor:
    """(B, h, w) 1.0 where the argmax over classes of ``mean_prob`` (B, C, h, w) is a foreground class, else 0."""
    return (maps.mean_prob.argmax(1) != 0).float()


@register
class RandomForegroundStrategy(Strategy):
    name = "random_fg"

    def select(self, ctx: QueryContext) -> Selection:
        """Candidates by a uniform key in [0, 1) plus 1 for those holding predicted foreground, highest first."""
        holds_foreground = ctx.pixel_score(self.name, predicted_foreground) > 0
        keys = holds_foreground + ctx.rng.random(len(ctx.candidates))
        picks, costs = fill_budget(np.argsort(-keys, kind="stable"), ctx)
        return Selection(picks, [float(keys[i]) for i in picks], costs)
