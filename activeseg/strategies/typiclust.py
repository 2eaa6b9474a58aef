"""``typiclust``: typical regions of the least-labeled clusters (Hacohen et al. 2022, "Active learning on a
budget", TypiClust; avihu111/TypiClust ``deep-al/pycls/al/typiclust.py``), for low budgets.

Over L2-normalised embeddings of the labeled regions and the candidates: k-means with K = |labeled| + B
clusters, B the number of picks; clusters of at most ``min_cluster_size`` points are dropped; each pick
visits the cluster with the fewest labeled points, then the largest, and takes its most typical
unlabeled region, Typicality(x) = (1/k sum_{x_i in kNN(x)} |x - x_i|_2)^-1 with
k = min(``neighbours``, cluster size / 2). The functions are in ``representative``.

Decisions the paper leaves open:
- Embeddings: the pretrained encoder's (``extras["pool_embeddings"]``) when the round has them, else the
  round model's pooled descriptors (labeled regions described as in ``coreset``).
- B: the number of candidates of median cost the pixel budget buys (``affordable_count``).
- Clustering: scikit-learn's exact ``KMeans`` (k-means++, one initialisation, seeded from the query's
  generator) for every K: pools are thousands of regions, not the reference's 50 000 images, so its
  ``MiniBatchKMeans`` above 50 clusters is not needed, and the result does not depend on mini-batches.
  K is capped at the number of distinct points (duplicate embeddings would leave clusters empty)
  and, as the reference, at 500.
- Labeled counts are updated as picks are made (the paper's "fewest labeled points"; the reference
  cycles through a fixed order instead, which is the same until a cluster is visited twice). Ties go to
  the lower cluster id.
- Dropped clusters are visited only once no other cluster has a candidate left, so if every cluster is
  that small, none is dropped (the reference would fail).
- Typicality is computed, as the reference, among the cluster's candidates not yet picked, k from their
  number; with Euclidean distances as the paper (the reference's faiss index gives squared ones); a lone
  candidate's typicality is 0.
- Pixel budget: the picks go through ``fill_budget``; pixels they leave over (overlapping or clipped
  regions cost less than the median) go to the other candidates, farthest first from the labeled and
  picked regions. The reported scores rank the picks (B for the first of B, down to 1; a left-over fill
  scores 0), the order functions returning only the order.
"""

from __future__ import annotations

import numpy as np

from activeseg.core.config import TypiclustOptions
from activeseg.strategies.base import QueryContext
from activeseg.strategies.registry import register
from activeseg.strategies.representative import RepresentativeStrategy, typiclust_order


@register
class TypiclustStrategy(RepresentativeStrategy):
    name = "typiclust"
    Options = TypiclustOptions

    def order(self, ctx: QueryContext, candidates: np.ndarray, labeled: np.ndarray, count: int) -> np.ndarray:
        seed = int(ctx.rng.integers(2**31 - 1))
        return typiclust_order(candidates, labeled, count, seed, self.options.min_cluster_size, self.options.neighbours)
