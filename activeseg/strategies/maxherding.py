"""``maxherding``: greedy maximisation of the generalised coverage (Bae et al. 2024, "Generalized coverage
for more robust low-budget active learning", ECCV; BorealisAI/uherding ``deep-al/pycls/al/herding.py``).

GCov(L) = (1/|P|) sum_{i in P} max_{l in L} k(x_i, x_l) over the pool P (labeled and candidates), with
the RBF kernel k(x, y) = exp(-|x - y|^2 / (2 bandwidth^2)) on L2-normalised embeddings. With
c_i = max_{l in L} k(x_i, x_l) (0 if L is empty), each step takes
x* = argmax_x sum_{i in P} max(k(x_i, x) - c_i, 0) among the candidates, then c_i <- max(c_i, k(x_i, x*)).
The functions are in ``representative``.

Decisions the paper leaves open:
- Embeddings: the pretrained encoder's (``extras["pool_embeddings"]``) when the round has them, else the
  round model's pooled descriptors (labeled regions described as in ``coreset``).
- Number of picks: the number of candidates of median cost the pixel budget buys (``affordable_count``).
- Kernel scale: our bandwidth h enters as 2 h^2 (the reference's RBF is exp(-(d / h)^2)); default 0.5.
- The candidates are all unlabeled regions (the reference subsamples them for memory); memory is
  8 (M + N) N bytes, about 3.2 GB for 20 000 regions.
- Ties go to the lower candidate index.
- Pixel budget: the picks go through ``fill_budget``; pixels they leave over (overlapping or clipped
  regions cost less than the median) go to the other candidates, farthest first from the labeled and
  picked regions. The reported scores rank the picks (B for the first of B, down to 1; a left-over fill
  scores 0), the order functions returning only the order.
"""

from __future__ import annotations

import numpy as np

from activeseg.core.config import MaxHerdingOptions
from activeseg.strategies.base import QueryContext
from activeseg.strategies.registry import register
from activeseg.strategies.representative import RepresentativeStrategy, maxherding_order


@register
class MaxHerdingStrategy(RepresentativeStrategy):
    name = "maxherding"
    Options = MaxHerdingOptions

    def order(self, ctx: QueryContext, candidates: np.ndarray, labeled: np.ndarray, count: int) -> np.ndarray:
        return maxherding_order(candidates, labeled, count, self.options.bandwidth)
