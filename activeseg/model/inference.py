"""Deterministic prediction and streaming MC-dropout inference over a pool of regions.

MC dropout (Gal and Ghahramani; Jethaliya / Gorriz et al. use T stochastic passes): spatial dropout
sampled, batch norm in eval mode. The encoder has no dropout, so each batch is encoded once; its features
are decoded T times by the :class:`FoldedDecoder` (batch norm folded, the skip half of each decoder
convolution computed once per batch, channels-last). A batch's T probability maps (T, B, C, H, W) are
reduced at once and dropped, so memory is O(T x batch x C x H x W) whatever the pool size.

Decided here (the papers draw dropout from one global random stream): each region's dropout masks (T
per dropout site, ``nn.Dropout2d``'s distribution) come from a generator seeded by a hash of (``seed``,
region id), so a region's scores do not depend on the batch or shard it is scored in, nor on the order.

Per-pixel scores (natural logarithm), each reduced to one score per region over the region's pixels
inside the image by a :class:`RegionReduction` (``query.reduction``): the mean (default), or the mean
of the top ``query.top_fraction`` of the pixels:
- ``entropy``: H(mean_t p_t), the predictive entropy.
- ``variance``: the per-pixel variance across passes, averaged over classes (Jethaliya Eq. for the
  uncertainty map; BSQ Eq. 2). For two classes this equals var_t p_t(fg).
- ``bald``: H(mean_t p_t) - mean_t H(p_t) (Gal et al. 2017).
- any score a strategy adds with a per-pixel hook (:data:`PixelHook`, e.g. ``ripu``), computed and
  reduced inside the batch loop like the others, so no map of the pool is kept.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import torch
from torch.nn import functional as F

from activeseg.core.data import Dataset
from activeseg.core.util import sha256_text
from activeseg.model.network import EDConvNet, FoldedDecoder, dropout_masks
from activeseg.core.partition import Region

EPS = 1e-12


@dataclass
class PoolScores:
    """Per-region reductions, in the order of the regions given: (N,) each, descriptors (N, D);
    ``extra[name]`` (N,) for each per-pixel hook. ``maps[id]`` holds per-pixel maps for the regions
    asked for: ``mean_prob`` (C, h, w), ``entropy``, ``variance``, ``bald`` and each hook's (h, w)."""

    ids: list[str]
    entropy: np.ndarray
    variance: np.ndarray
    bald: np.ndarray
    descriptors: np.ndarray
    maps: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    extra: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class PixelMaps:
    """One batch's MC-dropout outputs: ``probs`` (T, B, C, h, w), ``mean_prob`` (B, C, h, w) and the
    per-pixel ``entropy``, ``variance``, ``bald`` (B, h, w), each over the region crops (mirror-padded
    beyond the image as the crops are)."""

    probs: torch.Tensor
    mean_prob: torch.Tensor
    entropy: torch.Tensor
    variance: torch.Tensor
    bald: torch.Tensor


PixelHook = Callable[[PixelMaps], torch.Tensor]
"""A per-pixel score (B, h, w) computed from a batch's :class:`PixelMaps`; reduced per region like the others."""


@dataclass(frozen=True)
class RegionReduction:
    """How a region's per-pixel scores become its score: ``mean`` over its in-image pixels, or ``top``:
    the mean of its ceil(``top_fraction`` x n) highest in-image pixels (at least one), so a region with a
    small very uncertain part (a rare structure in a patch of easy background) is not averaged away."""

    kind: Literal["mean", "top"] = "mean"
    top_fraction: float = 0.1

    def __post_init__(self) -> None:
        if not 0 < self.top_fraction <= 1:
            raise ValueError(f"top_fraction must be in (0, 1], got {self.top_fraction}")

    def __call__(self, scores: torch.Tensor) -> float:
        """(h, w) per-pixel scores -> the region's score."""
        return float(self.rows(scores.flatten()))

    def rows(self, scores: torch.Tensor) -> torch.Tensor:
        """(..., n) per-pixel scores, a region's n pixels per row -> (...) the regions' scores."""
        if self.kind == "mean":
            return scores.mean(-1)
        count = max(1, math.ceil(self.top_fraction * scores.shape[-1] - 1e-9))
        return scores.topk(count).values.mean(-1)


class ScorePool(Protocol):
    """What ``QueryContext.score_pool`` is: MC-dropout scores of the regions, with the hooks' scores."""

    def __call__(self, regions: list[Region], hooks: Mapping[str, PixelHook] | None = None) -> PoolScores: ...


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, C) float array -> (C, H, W) tensor."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflect-pad the last two dims of (N, C, H, W) up to multiples of ``multiple``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if not ph and not pw:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


@torch.no_grad()
def predict_probs(model: EDConvNet, image: np.ndarray, device: torch.device) -> np.ndarray:
    """Deterministic class probabilities (C, H, W) of a whole (H, W, C_in) image."""
    model.eval()
    x = to_tensor(image)[None].to(device)
    h, w = x.shape[-2:]
    logits = model(pad_to_multiple(x, 2**model.depth))[..., :h, :w]
    return torch.softmax(logits.float(), dim=1)[0].cpu().numpy()


def predict_mask(model: EDConvNet, image: np.ndarray, device: torch.device) -> np.ndarray:
    """(H, W) uint8 class ids."""
    return predict_probs(model, image, device).argmax(0).astype(np.uint8)


def region_batches(
    dataset: Dataset, regions: list[Region], batch_size: int
) -> Iterator[tuple[list[int], torch.Tensor, list[tuple[int, int]]]]:
    """Batches of equal-shaped region crops: (indices, (B, C, h, w) tensor, in-image (h, w) of each)."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, r in enumerate(regions):
        groups[(r.y1 - r.y0, r.x1 - r.x0)].append(i)
    for indices in groups.values():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            crops, valid = [], []
            for i in chunk:
                r = regions[i]
                s = dataset.samples[r.stem]
                ys, xs = r.clipped(s.height, s.width)
                crops.append(to_tensor(dataset.region_pixels(r)))
                valid.append((ys.stop - ys.start, xs.stop - xs.start))
            yield chunk, torch.stack(crops), valid


def region_generator(seed: int, region_id: str) -> torch.Generator:
    """The generator of a region's dropout masks, seeded from a stable hash of (``seed``, region id), so a
    region's scores do not depend on the other regions of its batch or shard, nor on their order."""
    return torch.Generator().manual_seed(int(sha256_text(f"{seed}/{region_id}")[:16], 16))


def batch_masks(model: EDConvNet, ids: list[str], passes: int, seed: int) -> list[torch.Tensor]:
    """Per dropout site of the model, the (T, B, C) channel multipliers of the regions ``ids``."""
    per_region = [dropout_masks(region_generator(seed, i), passes, model.dropout_channels, model.dropout.p)
                  for i in ids]
    return [torch.stack(site, dim=1) for site in zip(*per_region)]


def sample_logits(decoder: FoldedDecoder, features: list[torch.Tensor], masks: list[torch.Tensor]) -> torch.Tensor:
    """T stochastic decoder passes over the same features, one (T, B, C_l) multiplier per dropout site:
    logits (T, B, C, H, W). One pass per call: on the CPU, repeating the features to decode several
    passes in one call measured 2x slower."""
    terms = decoder.batch_terms(features)
    return torch.stack([decoder(terms, [m[t] for m in masks]) for t in range(len(masks[0]))])


def pixel_scores(logits: torch.Tensor) -> PixelMaps:
    """(T, B, C, h, w) logits -> the per-pixel maps; entropy H(mean_t p_t), variance mean_c var_t p_t and
    bald H(mean_t p_t) - mean_t H(p_t)."""
    logp = torch.log_softmax(logits.float(), dim=2)
    p = logp.exp()
    mean_p = p.mean(0)
    entropy = -(mean_p * torch.log(mean_p + EPS)).sum(dim=1)
    variance = (p - mean_p).square().mean(0).mean(dim=1)  # 5x faster than p.var(0) on these strides
    bald = entropy + (p * logp).sum(dim=2).mean(0)
    return PixelMaps(p, mean_p, entropy, variance, bald)


def reduce_regions(maps: dict[str, torch.Tensor], valid: list[tuple[int, int]],
                   reduction: RegionReduction) -> dict[str, np.ndarray]:
    """Per-pixel maps (B, h, w) -> (B,) scores over each region's in-image (h, w) part, regions with the
    same in-image size reduced together."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for j, size in enumerate(valid):
        groups[size].append(j)
    out = {name: np.zeros(len(valid), np.float64) for name in maps}
    for (vh, vw), js in groups.items():
        stacked = torch.stack([m[js, :vh, :vw] for m in maps.values()]).flatten(2)  # (K, G, vh x vw)
        for name, scores in zip(maps, reduction.rows(stacked).cpu().numpy()):
            out[name][js] = scores
    return out


@torch.inference_mode()
def mc_dropout_scores(
    model: EDConvNet,
    dataset: Dataset,
    regions: list[Region],
    passes: int,
    batch_size: int,
    device: torch.device,
    keep_maps: set[str] | None = None,
    progress: bool = False,
    reduction: RegionReduction = RegionReduction(),
    hooks: Mapping[str, PixelHook] | None = None,
    seed: int = 0,
) -> PoolScores:
    """Stream the pool through T = ``passes`` MC-dropout passes; see the module docstring. Each hook's
    per-pixel score is reduced per region by ``reduction`` like the built-in ones. A region's dropout
    masks come from (``seed``, its id) (:func:`region_generator`), so its scores are the same in any batch."""
    from tqdm import tqdm

    n = len(regions)
    hooks = hooks or {}
    out = {k: np.zeros(n, np.float64) for k in ("entropy", "variance", "bald", *hooks)}
    descriptors = np.zeros((n, model.descriptor_dim), np.float32)
    maps: dict[str, dict[str, np.ndarray]] = {}
    keep_maps = keep_maps or set()
    model.eval()
    use_amp = device.type == "cuda"
    decoder = FoldedDecoder(model)
    multiple = 2**model.depth
    bar = tqdm(total=n, desc="MC dropout", unit="region", disable=not progress, leave=False)
    for chunk, x, valid in region_batches(dataset, regions, batch_size):
        x = x.to(device, non_blocking=True)
        masks = [m.to(device) for m in batch_masks(model, [regions[i].id for i in chunk], passes, seed)]
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            features = model.encode(pad_to_multiple(x, multiple).contiguous(memory_format=torch.channels_last))
            descriptors[chunk] = model.descriptor(features).float().cpu().numpy()
            logits = sample_logits(decoder, features, masks)[..., : x.shape[-2], : x.shape[-1]]
        pixel = pixel_scores(logits)
        per_pixel = {"entropy": pixel.entropy, "variance": pixel.variance, "bald": pixel.bald}
        per_pixel.update({name: hook(pixel) for name, hook in hooks.items()})
        for name, scores in reduce_regions(per_pixel, valid, reduction).items():
            out[name][chunk] = scores
        for j, i in enumerate(chunk):
            if regions[i].id in keep_maps:
                vh, vw = valid[j]
                maps[regions[i].id] = {"mean_prob": pixel.mean_prob[j, :, :vh, :vw].cpu().numpy()}
                maps[regions[i].id].update({name: m[j, :vh, :vw].cpu().numpy() for name, m in per_pixel.items()})
        bar.update(len(chunk))
    bar.close()
    return PoolScores([r.id for r in regions], out["entropy"], out["variance"], out["bald"], descriptors, maps,
                      {name: out[name] for name in hooks})
