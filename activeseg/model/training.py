"""Training on revealed pixels only, whatever the granularity.

Each step samples crops of side ``train.crop`` around labeled regions (human regions, and pseudo-labeled
regions when there are any). Per pixel, the weight is 1 where a human label is known,
``train.pseudo_weight`` where only a pseudo-label is, and 0 elsewhere. Loss = weighted cross entropy
+ ``dice_weight`` x (1 - soft Dice over the foreground classes, weighted the same way). Random flips
and 90-degree rotations. Model selection on validation Dice. CUDA with mixed precision when available,
the same code on CPU.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from activeseg.core.config import Config
from activeseg.core.data import Dataset
from activeseg.model.inference import predict_mask, to_tensor
from activeseg.core.labels import LabelState
from activeseg.metrics import dice
from activeseg.model.network import EDConvNet, build_model, pick_device, save_checkpoint
from activeseg.core.partition import Region, crop
from activeseg.model.tracking import RunLog


@dataclass
class TrainResult:
    checkpoint: Path
    val_dice: float
    best_epoch: int
    history: list[dict] = field(default_factory=list)
    run_id: str | None = None


def anchors(state: LabelState) -> list[Region]:
    """Regions training crops are drawn around: every labeled and pseudo-labeled region."""
    regions = [Region.from_dict(h["region"]) for h in state.history]
    regions += [Region.from_dict(p["region"]) for p in state.pseudo_regions.values()]
    return regions


def sample_crop(state: LabelState, dataset: Dataset, anchor: Region, side: int, pseudo_weight: float,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A (side, side) window overlapping ``anchor``: image (side, side, C), target and weight (side, side)."""
    h, w = state.shapes[anchor.stem]
    cy = int(rng.integers(anchor.y0, min(anchor.y1, h)))
    cx = int(rng.integers(anchor.x0, min(anchor.x1, w)))
    y0 = int(np.clip(cy - rng.integers(0, side), 0, max(0, h - side)))
    x0 = int(np.clip(cx - rng.integers(0, side), 0, max(0, w - side)))
    window = Region(anchor.stem, y0, x0, y0 + side, x0 + side)
    known = crop(state.known[anchor.stem], window)
    pseudo_known = crop(state.pseudo_known[anchor.stem], window) & ~known
    target = np.where(known, crop(state.labels[anchor.stem], window), crop(state.pseudo[anchor.stem], window))
    weight = known.astype(np.float32) + pseudo_weight * pseudo_known.astype(np.float32)
    # mirror padding repeats pixels of small images; count each real pixel once
    ys, xs = window.clipped(h, w)
    weight[ys.stop - ys.start :, :] = 0
    weight[:, xs.stop - xs.start :] = 0
    return crop(dataset.image(anchor.stem), window), target, weight


def augment(x: torch.Tensor, y: torch.Tensor, wgt: torch.Tensor, rng: np.random.Generator):
    """Same random flips and 90-degree rotation for image (C, H, W), target and weight (H, W)."""
    k = int(rng.integers(0, 4))
    x, y, wgt = torch.rot90(x, k, (1, 2)), torch.rot90(y, k, (0, 1)), torch.rot90(wgt, k, (0, 1))
    if rng.random() < 0.5:
        x, y, wgt = x.flip(2), y.flip(1), wgt.flip(1)
    return x, y, wgt


def make_batch(state, dataset, regions, cfg: Config, rng) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    xs, ys, ws = [], [], []
    for _ in range(cfg.train.batch_size):
        anchor = regions[int(rng.integers(len(regions)))]
        image, target, weight = sample_crop(state, dataset, anchor, cfg.train.crop, cfg.train.pseudo_weight, rng)
        x, y, w = augment(to_tensor(image), torch.from_numpy(target.astype(np.int64)), torch.from_numpy(weight), rng)
        xs.append(x), ys.append(y), ws.append(w)
    return torch.stack(xs), torch.stack(ys), torch.stack(ws)


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, dice_weight: float) -> torch.Tensor:
    """Weighted CE + dice_weight x (1 - soft Dice). logits (N, C, H, W); target, weight (N, H, W)."""
    total = weight.sum().clamp_min(1.0)
    ce = (F.cross_entropy(logits, target, reduction="none") * weight).sum() / total
    probs = torch.softmax(logits, dim=1)[:, 1:]
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].float()
    w = weight[:, None]
    inter = (w * probs * onehot).sum(dim=(0, 2, 3))
    denom = (w * probs).sum(dim=(0, 2, 3)) + (w * onehot).sum(dim=(0, 2, 3))
    soft_dice = ((2 * inter + 1.0) / (denom + 1.0)).mean()
    return ce + dice_weight * (1 - soft_dice)


def mean_foreground_dice(pred: np.ndarray, gt: np.ndarray, classes: int) -> float:
    """Mean over classes 1..C-1 of the binary Dice; (H, W) class-id arrays."""
    return float(np.mean([dice(pred == c, gt == c) for c in range(1, classes)]))


def validation_dice(model: EDConvNet, dataset: Dataset, stems: list[str], device: torch.device) -> float:
    scores = [mean_foreground_dice(predict_mask(model, dataset.image(s), device), dataset.mask(s), dataset.classes)
              for s in stems]
    return float(np.mean(scores))


def train_model(cfg: Config, dataset: Dataset, state: LabelState, val_stems: list[str], out_dir: Path,
                run: RunLog | None = None, init: dict | None = None, seed: int = 0,
                progress: bool = True) -> TrainResult:
    """Train a fresh model (or fine-tune ``init``, a state dict) and keep the epoch with the best val Dice.

    Writes ``out_dir/model.pt`` (state dict + metadata, load with ``weights_only=True``).
    """
    from tqdm import tqdm

    regions = anchors(state)
    if not regions:
        raise ValueError("nothing is labeled yet: reveal an initial set before training")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    device = pick_device(cfg.train.device)
    m = cfg.model
    model = build_model(dataset.channels, dataset.classes, m.width, m.depth, m.dropout).to(device)
    if init is not None and cfg.train.mode == "finetune":
        model.load_state_dict(init)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    steps = max(1, cfg.train.samples_per_epoch // cfg.train.batch_size)
    best = (-1.0, 0, None)
    history = []
    bar = tqdm(range(cfg.train.epochs), desc="train", unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        losses = []
        for _ in range(steps):
            x, y, w = (t.to(device) for t in make_batch(state, dataset, regions, cfg, rng))
            with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
                logits = model(x)
            loss = segmentation_loss(logits.float(), y, w, cfg.train.dice_weight)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            losses.append(loss.item())
        val = validation_dice(model, dataset, val_stems, device)
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "val_dice": val})
        if run is not None:
            run.log_metrics({"loss": history[-1]["loss"], "val_dice": val}, step=epoch)
        bar.set_postfix(loss=f"{history[-1]['loss']:.3f}", val_dice=f"{val:.3f}")
        if val > best[0]:
            best = (val, epoch, copy.deepcopy(model.state_dict()))
    model.load_state_dict(best[2])
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = out_dir / "model.pt"
    meta = {"in_channels": dataset.channels, "classes": dataset.classes, "width": m.width, "depth": m.depth,
            "dropout": m.dropout, "val_dice": best[0], "epoch": best[1]}
    save_checkpoint(model, checkpoint, meta)
    if run is not None:
        run.log_metrics({"best_val_dice": best[0], "best_epoch": best[1]})
        run.log_artifact(checkpoint, "checkpoint")
    return TrainResult(checkpoint, best[0], best[1], history, run.run_id if run else None)
