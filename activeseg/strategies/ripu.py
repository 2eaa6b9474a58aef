"""``ripu``: region impurity x prediction uncertainty (Xie et al., CVPR 2022, "Towards Fewer
Annotations: Active Learning via Region Impurity and Prediction Uncertainty for Domain Adaptive
Semantic Segmentation"), per region.

Per pixel i:
- region impurity (Eq. 4-5): with Y the predicted class map and N_k(i) the k x k neighbourhood of i,
  P(i) = -sum_c (|N_k^c(i)| / |N_k(i)|) log(|N_k^c(i)| / |N_k(i)|), the entropy of the share of each
  predicted class in the neighbourhood (0 inside an object or the background, high on boundaries and
  where the prediction is fragmented);
- prediction uncertainty (Eq. 6): U(i) = H(mean_t p_t(i)), the entropy of the prediction;
- the score (their acquisition score for region-based selection) is P(i) x U(i), reduced over the
  region's in-image pixels like every uncertainty score (``query.reduction``: mean by default, as the
  paper averages over the region).

Decisions where the paper is open:
- The predicted class is the argmax of the MC-averaged prediction mean_t p_t (the paper has one
  deterministic pass); U is the entropy of that same mean, so with T = 1 both are the paper's.
- Natural logarithm, as the other entropies here.
- Border handling: the neighbourhood is clipped to the region crop the inference sees (shares are over
  the pixels of the window inside it, as zero padding with a count of the valid pixels does in the
  authors' code for the image border). Past the image border a mirror-padded patch holds mirrored
  predictions, which then count as neighbours (reflect padding); inside the image, pixels outside the
  region are not predicted in its pass and do not count.
- Computed inside the streaming MC-dropout loop by a per-pixel hook (``QueryContext.pixel_score``),
  so no map of the pool is kept.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from activeseg.core.config import RipuOptions
from activeseg.model.inference import EPS, PixelMaps
from activeseg.strategies.base import QueryContext, Strategy
from activeseg.strategies.registry import register


def region_impurity(mean_prob: torch.Tensor, k: int) -> torch.Tensor:
    """(B, C, H, W) class probabilities -> (B, H, W) impurity (Xie et al. Eq. 4-5): the entropy of the
    predicted-class shares in each pixel's k x k window, clipped to the map."""
    classes = mean_prob.shape[1]
    one_hot = F.one_hot(mean_prob.argmax(1), classes).permute(0, 3, 1, 2).float()
    share = F.avg_pool2d(one_hot, k, stride=1, padding=k // 2, count_include_pad=False)
    return -(share * torch.log(share + EPS)).sum(dim=1)


@register
class RipuStrategy(Strategy):
    name = "ripu"

    Options = RipuOptions

    def pixel_score(self, maps: PixelMaps) -> torch.Tensor:
        """(B, h, w) region impurity x prediction uncertainty."""
        return region_impurity(maps.mean_prob, self.options.k) * maps.entropy

    def score(self, ctx: QueryContext) -> np.ndarray:
        return ctx.pixel_score(self.name, self.pixel_score)
