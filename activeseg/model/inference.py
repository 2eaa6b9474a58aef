"""Deterministic prediction and streaming MC-dropout inference over a pool of regions.

MC dropout (Gal and Ghahramani; Jethaliya / Gorriz et al. use T stochastic passes): dropout in train
mode, batch norm in eval mode. The encoder has no dropout, so each batch is encoded once; its features
are decoded T times. A batch's T probability maps (T, B, C, H, W) are reduced at once and dropped, so memory is
O(T x batch x C x H x W) whatever the pool size.

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
from activeseg.model.network import EDConvNet, mc_mode
from activeseg.core.partition import Region, crop

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
        if self.kind == "mean":
            return float(scores.mean())
        flat = scores.flatten()
        count = max(1, math.ceil(self.top_fraction * flat.numel() - 1e-9))
        return float(flat.topk(count).values.mean())


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
                crops.append(to_tensor(crop(dataset.image(r.stem), r)))
                valid.append((ys.stop - ys.start, xs.stop - xs.start))
            yield chunk, torch.stack(crops), valid


def sample_decoder(model: EDConvNet, features: list[torch.Tensor], passes: int) -> torch.Tensor:
    """T stochastic decoder passes over the same features: logits (T, B, C, H, W). One pass per call:
    on the CPU, repeating the features to decode several passes in one call measured 2x slower."""
    return torch.stack([model.decode(features) for _ in range(passes)])


def _entropy(p: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H, W)."""
    return -(p * torch.log(p + EPS)).sum(dim=1)


@torch.no_grad()
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
) -> PoolScores:
    """Stream the pool through T = ``passes`` MC-dropout passes; see the module docstring. Each hook's
    per-pixel score is reduced per region by ``reduction`` like the built-in ones."""
    from tqdm import tqdm

    n = len(regions)
    hooks = hooks or {}
    out = {k: np.zeros(n, np.float64) for k in ("entropy", "variance", "bald", *hooks)}
    descriptors = np.zeros((n, model.descriptor_dim), np.float32)
    maps: dict[str, dict[str, np.ndarray]] = {}
    keep_maps = keep_maps or set()
    mc_mode(model)
    multiple = 2**model.depth
    bar = tqdm(total=n, desc="MC dropout", unit="region", disable=not progress, leave=False)
    use_amp = device.type == "cuda"
    for chunk, x, valid in region_batches(dataset, regions, batch_size):
        x = x.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            features = model.encode(pad_to_multiple(x, multiple))
            descriptors[chunk] = model.descriptor(features).float().cpu().numpy()
            logits = sample_decoder(model, features, passes)[..., : x.shape[-2], : x.shape[-1]]
        logp = torch.log_softmax(logits.float(), dim=2)  # (T, B, C, h, w)
        p = logp.exp()
        mean_p = p.mean(0)
        entropy = _entropy(mean_p)
        variance = p.var(0, unbiased=False).mean(dim=1)
        bald = entropy + (p * logp).sum(dim=2).mean(0)
        pixel = PixelMaps(p, mean_p, entropy, variance, bald)
        per_pixel = {"entropy": entropy, "variance": variance, "bald": bald}
        per_pixel.update({name: hook(pixel) for name, hook in hooks.items()})
        for j, i in enumerate(chunk):
            vh, vw = valid[j]
            for name, m in per_pixel.items():
                out[name][i] = reduction(m[j, :vh, :vw])
            if regions[i].id in keep_maps:
                maps[regions[i].id] = {"mean_prob": mean_p[j, :, :vh, :vw].cpu().numpy()}
                maps[regions[i].id].update({name: m[j, :vh, :vw].cpu().numpy() for name, m in per_pixel.items()})
        bar.update(len(chunk))
    bar.close()
    model.eval()
    return PoolScores([r.id for r in regions], out["entropy"], out["variance"], out["bald"], descriptors, maps,
                      {name: out[name] for name in hooks})
