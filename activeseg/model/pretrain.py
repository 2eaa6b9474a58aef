"""Self-supervised pretraining of the segmentation network on the unlabeled pool: masked reconstruction.

**Method.** Masked image modelling as in SimMIM (Xie et al. 2022) and MAE (He et al. 2022), with the
U-Net itself as the model, as the inpainting pretext of Models Genesis (Zhou et al. 2019) does for
medical images: random crops of the pool's regions are cut into ``patch`` x ``patch`` cells, a fixed share
``mask_ratio`` of the cells (exactly ``round(mask_ratio x cells)`` per crop) is replaced by the crop's
per-channel mean (zero after the network's standardisation), and the network, with a reconstruction
head of ``C`` output channels in place of the class logits, predicts the standardised pixels; the loss is
the mean squared error on the masked pixels only (SimMIM's choice: the visible pixels would be a copy task).

**Why this and not contrastive learning** (SimCLR, BYOL): reconstruction pretrains the encoder *and*
the decoder with its skip connections, all of which segmentation reuses, where a contrastive loss on
pooled features trains the encoder alone; it needs no strong augmentations (colour jitter would fight the
stain styles the query must tell apart) and no large batches or negatives, which a 2-core CPU cannot
afford; and its loss is a plain masked MSE, so no library of losses or heads is needed (the head is the
network's own 1 x 1 convolution with ``C`` outputs).

**Decisions.** Crops come from the training pool's regions (every image of the train split, or a slide's
tissue tiles), never the validation or test images. The pretrained network starts every training that
does not continue from the previous round's model (:func:`transfer`: every weight but the head's). Its
encoder also gives each region an embedding (:func:`region_embeddings`): the L2-normalised average of the
bottleneck over the region, the descriptor of :class:`~activeseg.model.network.EDConvNet`.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from activeseg.core.config import Config
from activeseg.core.data import Dataset
from activeseg.core.partition import Region
from activeseg.model.crops import crop_window
from activeseg.model.inference import to_tensor
from activeseg.model.network import EDConvNet, build_model, save_checkpoint, standardize

HEAD = "head."
"""The state-dict prefix of the network's last 1 x 1 convolution: the reconstruction head here, the class
logits in segmentation; the one part :func:`transfer` leaves out."""


@dataclass
class PretrainResult:
    model: EDConvNet
    losses: list[float]
    seconds: float


def mask_cells(n: int, side: int, patch: int, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """(N, 1, side, side) bool, True where hidden: per sample exactly ``round(ratio x cells)`` of the
    ``(side / patch)^2`` cells of side ``patch``, drawn uniformly without replacement."""
    cells = side // patch
    hidden = round(ratio * cells * cells)
    order = torch.rand(n, cells * cells, generator=generator).argsort(dim=1)
    grid = torch.zeros(n, cells * cells, dtype=torch.bool)
    grid.scatter_(1, order[:, :hidden], True)
    grid = grid.view(n, 1, cells, cells)
    return grid.repeat_interleave(patch, dim=2).repeat_interleave(patch, dim=3)


def masked_input(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) crops with the ``mask`` (N, 1, H, W) pixels replaced by each crop's per-channel mean."""
    return torch.where(mask, x.mean(dim=(2, 3), keepdim=True), x)


def reconstruction_loss(output: torch.Tensor, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error between ``output`` (N, C, H, W) and the standardised crops ``x`` (as the
    network's first layer sees them), over the hidden pixels ``mask`` (N, 1, H, W) and all channels."""
    error = (output - standardize(x)).pow(2) * mask
    return error.sum() / (mask.sum() * x.shape[1]).clamp_min(1)


def sample_crops(dataset: Dataset, regions: list[Region], side: int, n: int, rng: np.random.Generator) -> torch.Tensor:
    """(N, C, side, side) crops: each centred on a uniformly drawn pixel of a uniformly drawn region, shifted
    inside its image (mirror-padded where the image is smaller than ``side``)."""
    crops = []
    for i in rng.integers(0, len(regions), n):
        region = regions[i]
        sample = dataset.samples[region.stem]
        centre = (region.stem, int(rng.integers(region.y0, region.y1)), int(rng.integers(region.x0, region.x1)))
        crops.append(to_tensor(dataset.region_pixels(crop_window((sample.height, sample.width), centre, side))))
    return torch.stack(crops)


def pretrain_model(cfg: Config, dataset: Dataset, regions: list[Region], device: torch.device,
                   on_step: Callable[[int, float], None] | None = None) -> PretrainResult:
    """Masked-reconstruction pretraining (module docstring) for ``pretrain.steps`` AdamW steps, the learning
    rate on a cosine from ``pretrain.lr`` to 0; the network of ``model`` with a ``C``-channel head.
    ``on_step(step, loss)`` after every step."""
    p, m = cfg.pretrain, cfg.model
    torch.manual_seed(p.seed)
    rng, generator = np.random.default_rng(p.seed), torch.Generator().manual_seed(p.seed)
    model = build_model(dataset.channels, dataset.channels, m.width, m.depth, m.dropout).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=p.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * t / p.steps)))
    losses: list[float] = []
    started = time.perf_counter()
    model.train()
    for step in range(p.steps):
        x = sample_crops(dataset, regions, p.crop, p.batch_size, rng)
        mask = mask_cells(len(x), p.crop, p.patch, p.mask_ratio, generator)
        x, mask = x.to(device), mask.to(device)
        loss = reconstruction_loss(model(masked_input(x, mask)), x, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        losses.append(float(loss.item()))
        if on_step is not None:
            on_step(step, losses[-1])
    return PretrainResult(model.eval(), losses, time.perf_counter() - started)


def save_pretrained(model: EDConvNet, path: Path, cfg: Config, channels: int) -> None:
    """Write the pretrained network (its head predicts the ``channels`` image channels) as a checkpoint,
    atomically (a partial file, then renamed: several processes may share the folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.{os.getpid()}.tmp")
    m = cfg.model
    save_checkpoint(model, partial, {"in_channels": channels, "classes": channels, "width": m.width,
                                     "depth": m.depth, "dropout": m.dropout})
    partial.replace(path)


def transfer(net: EDConvNet, pretrained: dict[str, torch.Tensor]) -> None:
    """Load a pretrained state dict into the segmentation network ``net``: every weight and buffer but the
    head's (its output channels differ). The two must otherwise be the same architecture."""
    body = {key: value for key, value in pretrained.items() if not key.startswith(HEAD)}
    try:
        missing, unexpected = net.load_state_dict(body, strict=False)
    except RuntimeError as exc:  # a weight of another shape
        raise ValueError(f"the pretrained network does not fit this one: {exc}") from None
    if unexpected or any(not key.startswith(HEAD) for key in missing):
        raise ValueError(f"the pretrained network does not fit this one (missing {missing}, unexpected {unexpected})")


@torch.no_grad()
def region_embeddings(model: EDConvNet, dataset: Dataset, regions: list[Region], device: torch.device) -> np.ndarray:
    """(R, D) float32: per region the L2-normalised channel-wise average of the encoder's bottleneck
    (:meth:`EDConvNet.descriptor`) over the region's pixels, in eval mode."""
    model.eval()
    out = np.empty((len(regions), model.descriptor_dim), np.float32)
    for i, region in enumerate(regions):
        x = to_tensor(dataset.region_pixels(region))[None].to(device)
        out[i] = F.normalize(model.descriptor(model.encode(x)), dim=1)[0].cpu().numpy()
    return out
