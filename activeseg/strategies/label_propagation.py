"""``label_propagation``: active learning with a weak annotator (Belharbi et al. 2021).

Each round:
1. A neighbour graph over the whole training pool (every region at the configured granularity,
   labeled or not) under ``distance``:
   - ``histogram_js`` (the paper): per channel a ``bins``-bin histogram over [0, 1] of the region's
     in-image pixels; the channels' histograms are concatenated and normalised to sum 1, and the
     distance is their Jensen-Shannon divergence (natural log; it equals the mean of the per-channel
     divergences). Its square root, the JS distance, gives the same neighbours.
   - ``descriptor``: Euclidean distance between the segmentation model's descriptors (channel mean of
     the bottleneck).
   The paper builds the graph within each image-level class (GlaS benign / malignant); our datasets have
   no image classes, so the graph spans the whole pool.
2. An unlabeled region is pseudo-labeled when a labeled region (every pixel known) is among its ``k``
   nearest other regions (k = 40 in the paper; ties broken by pool order; at most pool size - 1).
3. The oracle's pick: random among the unlabeled candidates that are not pseudo-labeled under the
   current labeled set (recomputed from the label state, so a resumed round sees the same set). When
   those cannot spend the budget, the pseudo-labeled ones follow in random order (the paper does not
   say what happens then). Recorded score: 1 for a pick that was not pseudo-labeled, 0 otherwise.
4. After the picks the pseudo-labeled set is recomputed with the new labeled set. Each gets the
   current model's deterministic prediction thresholded at t*: foreground where p(foreground) >= t
   (with C > 2 classes: the most likely foreground class where its probability is >= t, background
   elsewhere). t* is the value of a grid (``threshold_steps`` values evenly spaced over [0.05, 0.95])
   that maximises the mean validation IoU (per image the mean over foreground classes of the IoU, both
   empty counting 1; the lowest t on ties).
5. Pseudo-labels replace the previous round's, never count as cost and weigh lambda =
   ``train.pseudo_weight`` in the loss (the paper uses lambda = 0.1 on GlaS). See ``strategies.pseudo``.

The paper trains twice per round (once on the labeled set alone to make the pseudo-masks, then on the
labeled and pseudo-labeled sets). We train once per round: the pseudo-masks come from the model of the
current round, trained on the labeled regions and the previous round's pseudo-labels.

Whole-slide images (:mod:`activeseg.core.slides`) in the training or validation split are refused at
the start of the query with a ``ConfigError``: the pseudo-masks and t* come from predictions of whole
images, and a slide is only read per region.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.special import entr

from activeseg.core.config import LabelPropagationOptions
from activeseg.model.inference import mc_dropout_scores, predict_probs
from activeseg.core.partition import Region
from activeseg.core.pool import pool_regions
from activeseg.strategies.base import QueryContext, Selection, Strategy, fill_budget
from activeseg.strategies.pseudo import open_pixels_after
from activeseg.strategies.registry import register

Distance = Callable[[np.ndarray, np.ndarray], np.ndarray]


def colour_histograms(images: list[np.ndarray], bins: int) -> np.ndarray:
    """(N, C * bins): per channel a histogram over [0, 1] of each (h, w, C) image, rows summing to 1."""
    rows = []
    for image in images:
        hist = [np.histogram(image[..., c], bins=bins, range=(0.0, 1.0))[0] for c in range(image.shape[-1])]
        row = np.concatenate(hist).astype(np.float64)
        rows.append(row / row.sum())
    return np.array(rows)


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """(n, B), (m, B) distributions -> (n, m) Jensen-Shannon divergences, natural log.

    JS(p, q) = H((p + q) / 2) - (H(p) + H(q)) / 2 with H the Shannon entropy (0 log 0 = 0): one
    logarithm per bin and pair instead of two; rounding below zero is clipped."""
    mixture = entr((p[:, None, :] + q[None, :, :]) / 2).sum(-1)
    return np.maximum(mixture - (entr(p).sum(-1)[:, None] + entr(q).sum(-1)[None, :]) / 2, 0.0)


def euclidean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, D), (m, D) -> (n, m) Euclidean distances."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.maximum(sq, 0.0))


def knn_pseudo_labeled(features: np.ndarray, labeled: np.ndarray, k: int, distance: Distance) -> np.ndarray:
    """(N,) bool: the unlabeled rows with a labeled row among their ``k`` nearest other rows.

    Ties are broken by row order. No sort: a row's nearest labeled row (the first on ties) is among its
    k nearest iff fewer than k rows come before it in (distance, row) order. Distances are computed in
    blocks of rows, so memory stays O(block x N x D) (about 32 MB of float64), never N x N x D.
    """
    n = len(features)
    out = np.zeros(n, bool)
    k = min(k, n - 1)
    rows, labeled_rows = np.flatnonzero(~labeled), np.flatnonzero(labeled)
    if k < 1 or labeled_rows.size == 0:
        return out
    cols = np.arange(n)
    block = max(1, 2**22 // max(1, n * features.shape[1]))
    for start in range(0, len(rows), block):
        idx = rows[start : start + block]
        d = distance(features[idx], features)
        d[np.arange(len(idx)), idx] = np.inf
        first = labeled_rows[np.argmin(d[:, labeled_rows], axis=1)]
        nearest = d[np.arange(len(idx)), first][:, None]
        ahead = (d < nearest) | ((d == nearest) & (cols[None, :] < first[:, None]))
        out[idx] = ahead.sum(1) < k
    return out


def oracle_order(eligible: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random order of the ``eligible`` (bool (N,)) indices, then a random order of the others."""
    return np.concatenate([rng.permutation(np.flatnonzero(eligible)), rng.permutation(np.flatnonzero(~eligible))])


def threshold_mask(prob: np.ndarray, t: float) -> np.ndarray:
    """(C, H, W) probabilities -> (H, W) uint8: the likeliest foreground class where its prob >= t, else 0."""
    fg = prob[1:]
    return np.where(fg.max(0) >= t, fg.argmax(0) + 1, 0).astype(np.uint8)


def mean_iou(pred: np.ndarray, gt: np.ndarray, classes: int) -> float:
    """Mean over foreground classes of IoU(pred == c, gt == c) for (H, W) class ids; both empty = 1."""
    ious = []
    for c in range(1, classes):
        p, g = pred == c, gt == c
        union = int((p | g).sum())
        ious.append(1.0 if union == 0 else int((p & g).sum()) / union)
    return float(np.mean(ious))


def best_threshold(probs: list[np.ndarray], masks: list[np.ndarray], thresholds: np.ndarray) -> float:
    """The threshold maximising the mean IoU of :func:`threshold_mask` over (C, H, W) probs and (H, W) masks."""
    scores = [np.mean([mean_iou(threshold_mask(p, t), m, p.shape[0]) for p, m in zip(probs, masks)])
              for t in thresholds]
    return float(thresholds[int(np.argmax(scores))])


@register
class LabelPropagationStrategy(Strategy):
    name = "label_propagation"

    Options = LabelPropagationOptions

    def select(self, ctx: QueryContext) -> Selection:
        k = self.options.k
        distance = js_divergence if self.options.distance == "histogram_js" else euclidean
        split = ctx.extras["split"]
        self.refuse_slides(ctx, split["train"] + split["val"], "its pseudo-labels come from predictions of "
                           "whole pool and validation images")
        pool = pool_regions(ctx.dataset, ctx.extras["split"]["train"], ctx.extras["cfg"])
        index = {r.id: j for j, r in enumerate(pool)}
        missing = [r.id for r in ctx.candidates if r.id not in index]
        if missing:
            raise ValueError(f"label_propagation: candidate {missing[0]} is not a region of the training pool")
        cand = np.array([index[r.id] for r in ctx.candidates], np.int64)
        features = self.features(ctx, pool)
        labeled = np.array([ctx.state.new_pixels(r) == 0 for r in pool])
        pseudo_now = knn_pseudo_labeled(features, labeled, k, distance)
        picks, costs = fill_budget(oracle_order(~pseudo_now[cand], ctx.rng), ctx)
        labeled_after = open_pixels_after(ctx, picks, pool) == 0
        regions = [pool[j] for j in np.flatnonzero(knn_pseudo_labeled(features, labeled_after, k, distance))]
        pseudo = list(zip(regions, self.pseudo_masks(ctx, regions)))
        scores = [0.0 if pseudo_now[cand[i]] else 1.0 for i in picks]
        return Selection(picks, scores, costs, pseudo=pseudo, pseudo_origin=ctx.model_id, replace_pseudo=True)

    def features(self, ctx: QueryContext, pool: list[Region]) -> np.ndarray:
        """(N, D) per pool region: colour histograms, or the model's descriptors."""
        if self.options.distance == "histogram_js":
            images = []
            for r in pool:
                image = ctx.dataset.image(r.stem)
                images.append(image[r.clipped(*image.shape[:2])])
            return colour_histograms(images, self.options.bins)
        cfg = ctx.extras["cfg"]
        return mc_dropout_scores(ctx.extras["model"], ctx.dataset, pool, 1, cfg.query.batch_size,
                                 ctx.extras["device"]).descriptors.astype(np.float64)

    def pseudo_masks(self, ctx: QueryContext, regions: list[Region]) -> list[np.ndarray]:
        """(h, w) uint8 masks of each region's in-image part, at the validation-best threshold."""
        if not regions:
            return []
        model, device, val = ctx.extras["model"], ctx.extras["device"], ctx.extras["split"]["val"]
        thresholds = np.linspace(0.05, 0.95, self.options.threshold_steps)
        t = best_threshold([predict_probs(model, ctx.dataset.image(s), device) for s in val],
                           [ctx.dataset.mask(s) for s in val], thresholds)
        masks: dict[str, np.ndarray] = {}
        for stem in sorted({r.stem for r in regions}):
            prob = predict_probs(model, ctx.dataset.image(stem), device)
            for r in regions:
                if r.stem == stem:
                    masks[r.id] = threshold_mask(prob[(slice(None), *r.clipped(*prob.shape[1:]))], t)
        return [masks[r.id] for r in regions]
