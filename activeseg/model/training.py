"""Training on revealed pixels only, whatever the granularity; its length follows the labels.

**Length.** With ``P`` labeled pixels (human labels, plus pixels with only a pseudo-label), training runs
``T = clamp(ceil(passes x P / (batch_size x crop^2)), min_steps, max_steps)`` optimisation steps: each
labeled pixel is the crop centre ``passes`` times on average counted in crop pixels (a crop of
``crop^2`` pixels per sample; near the edge of a labeled region part of a crop is unlabeled, so the
labeled pixels actually seen are fewer). ``full`` follows the same rule, so it is the converged upper
bound rather than a same-compute reference. The steps are grouped in epochs of ``steps_per_epoch``
(the last one shorter when ``T`` is not a multiple), with validation Dice after each; the learning
rate follows ``train.schedule`` over the ``T`` planned steps (cosine from ``lr`` to 0, or one-cycle,
Smith & Topin 2019, with torch's defaults: ``lr/25`` -> ``lr`` at 30 % -> ``lr/(25e4)``). Early stopping:
training ends after ``patience`` epochs in a row without a better validation Dice (0: never); the
epoch with the best validation Dice is kept.

**Crops.** A crop centre is a labeled pixel drawn uniformly over every labeled pixel of the training
images (so an image or region contributes in proportion to its labeled pixels); with
``foreground_oversample = f`` a fraction ``f`` of the crops is centred on a labeled foreground pixel
(class > 0) instead. The (crop, crop) window is centred on that pixel and shifted inside the image.
Per pixel, the weight is 1 where a human label is known, ``train.pseudo_weight`` where only a
pseudo-label is, and 0 elsewhere. Loss = weighted cross entropy + ``dice_weight`` x (1 - soft Dice
over the foreground classes, weighted the same way). Random flips and 90-degree rotations. CUDA with
mixed precision when available, the same code on CPU.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from activeseg.core.config import Config, TrainConfig
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
    train_steps: int = 0  # optimisation steps run (fewer than planned when stopped early)
    stop_epoch: int = 0  # the last epoch run, counted from 0
    train_seconds: float = 0.0  # wall time of the optimisation and validation


def planned_steps(labeled_pixels: int, train: TrainConfig) -> int:
    """``clamp(ceil(passes x labeled_pixels / (batch_size x crop^2)), min_steps, max_steps)``.

    Not from the papers (they train for a fixed number of epochs over a labeled set): a decision so
    that training length, not compute, follows the labels and ``full`` converges."""
    steps = math.ceil(train.passes * labeled_pixels / (train.batch_size * train.crop**2))
    return int(min(max(steps, train.min_steps), train.max_steps))


def should_stop(val_dices: list[float], patience: int) -> bool:
    """True once the last ``patience`` epochs brought no validation Dice above the best before them
    (``patience`` 0: never)."""
    if patience == 0 or len(val_dices) <= patience:
        return False
    return max(val_dices[-patience:]) <= max(val_dices[:-patience])


def lr_schedule(opt: torch.optim.Optimizer, train: TrainConfig, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per optimisation step: cosine from ``train.lr`` (step 0) to 0 (step ``total_steps``),
    or one-cycle with torch's defaults (peak ``train.lr`` at 30 %)."""
    if train.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=train.lr, total_steps=total_steps)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * t / total_steps)))


@dataclass
class PixelPool:
    """Pixels over several images, drawn uniformly: the flat indices of each image's pixels, concatenated."""

    stems: list[str]
    widths: list[int]
    ends: np.ndarray  # (S,) cumulative pixel counts per image
    flat: np.ndarray  # (P,) flat index of each pixel inside its image

    @classmethod
    def of(cls, masks: dict[str, np.ndarray]) -> PixelPool:
        """The True pixels of ``masks`` ((H, W) bool per stem)."""
        stems = [s for s, m in masks.items() if m.any()]
        flats = [np.flatnonzero(masks[s]) for s in stems]
        return cls(stems, [masks[s].shape[1] for s in stems], np.cumsum([len(f) for f in flats], dtype=np.int64),
                   np.concatenate(flats) if flats else np.zeros(0, np.int64))

    def __len__(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    def draw(self, rng: np.random.Generator) -> tuple[str, int, int]:
        """One pixel, each with probability 1 / len(self): (stem, y, x)."""
        i = int(rng.integers(len(self)))
        k = int(np.searchsorted(self.ends, i, side="right"))
        y, x = divmod(int(self.flat[i]), self.widths[k])
        return self.stems[k], y, x


@dataclass
class CropCentres:
    """Where crops are centred: any labeled pixel, or (a fraction ``foreground_oversample`` of the
    time) a labeled foreground pixel."""

    labeled: PixelPool
    foreground: PixelPool
    foreground_oversample: float

    @classmethod
    def of(cls, state: LabelState, foreground_oversample: float) -> CropCentres:
        labeled = {s: state.known[s] | state.pseudo_known[s] for s in state.shapes}
        foreground = {s: np.where(state.known[s], state.labels[s], state.pseudo[s] * state.pseudo_known[s]) > 0
                      for s in state.shapes}
        return cls(PixelPool.of(labeled), PixelPool.of(foreground), foreground_oversample)

    def draw(self, rng: np.random.Generator) -> tuple[str, int, int]:
        oversample = self.foreground_oversample > 0 and len(self.foreground) > 0
        if oversample and rng.random() < self.foreground_oversample:
            return self.foreground.draw(rng)
        return self.labeled.draw(rng)


def sample_crop(state: LabelState, dataset: Dataset, centre: tuple[str, int, int], side: int,
                pseudo_weight: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (side, side) window centred on ``centre`` = (stem, y, x), shifted inside the image:
    image (side, side, C), target and weight (side, side)."""
    stem, cy, cx = centre
    h, w = state.shapes[stem]
    y0 = int(np.clip(cy - side // 2, 0, max(0, h - side)))
    x0 = int(np.clip(cx - side // 2, 0, max(0, w - side)))
    window = Region(stem, y0, x0, y0 + side, x0 + side)
    known = crop(state.known[stem], window)
    pseudo_known = crop(state.pseudo_known[stem], window) & ~known
    target = np.where(known, crop(state.labels[stem], window), crop(state.pseudo[stem], window))
    weight = known.astype(np.float32) + pseudo_weight * pseudo_known.astype(np.float32)
    # mirror padding repeats pixels of small images; count each real pixel once
    ys, xs = window.clipped(h, w)
    weight[ys.stop - ys.start :, :] = 0
    weight[:, xs.stop - xs.start :] = 0
    return crop(dataset.image(stem), window), target, weight


def augment(x: torch.Tensor, y: torch.Tensor, wgt: torch.Tensor, rng: np.random.Generator):
    """Same random flips and 90-degree rotation for image (C, H, W), target and weight (H, W)."""
    k = int(rng.integers(0, 4))
    x, y, wgt = torch.rot90(x, k, (1, 2)), torch.rot90(y, k, (0, 1)), torch.rot90(wgt, k, (0, 1))
    if rng.random() < 0.5:
        x, y, wgt = x.flip(2), y.flip(1), wgt.flip(1)
    return x, y, wgt


def make_batch(state: LabelState, dataset: Dataset, centres: CropCentres, cfg: Config,
               rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Augmented crops: images (N, C, crop, crop), targets and weights (N, crop, crop)."""
    xs, ys, ws = [], [], []
    for _ in range(cfg.train.batch_size):
        image, target, weight = sample_crop(state, dataset, centres.draw(rng), cfg.train.crop, cfg.train.pseudo_weight)
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
    """Train a fresh model (or fine-tune ``init``, a state dict, when ``train.mode`` is finetune) for
    the labeled pixels' number of steps (module docstring) and keep the epoch with the best val Dice.

    Writes ``out_dir/model.pt`` (state dict + metadata, load with ``weights_only=True``).
    """
    from tqdm import tqdm

    t = cfg.train
    centres = CropCentres.of(state, t.foreground_oversample)
    if not len(centres.labeled):
        raise ValueError("nothing is labeled yet: reveal an initial set before training")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    device = pick_device(t.device, t.threads)
    m = cfg.model
    model = build_model(dataset.channels, dataset.classes, m.width, m.depth, m.dropout).to(device)
    if init is not None and t.mode == "finetune":
        model.load_state_dict(init)
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    total = planned_steps(len(centres.labeled), t)
    schedule = lr_schedule(opt, t, total)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    best = (-1.0, 0, None)
    history: list[dict] = []
    started = time.perf_counter()
    bar = tqdm(range(math.ceil(total / t.steps_per_epoch)), desc="train", unit="epoch", disable=not progress,
               leave=False)
    for epoch in bar:
        model.train()
        losses = []
        for _ in range(min(t.steps_per_epoch, total - epoch * t.steps_per_epoch)):
            x, y, w = (v.to(device) for v in make_batch(state, dataset, centres, cfg, rng))
            with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
                logits = model(x)
            loss = segmentation_loss(logits.float(), y, w, t.dice_weight)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            schedule.step()
            losses.append(loss.item())
        val = validation_dice(model, dataset, val_stems, device)
        history.append({"epoch": epoch, "steps": len(losses), "loss": float(np.mean(losses)), "val_dice": val})
        if run is not None:
            run.log_metrics({"loss": history[-1]["loss"], "val_dice": val, "lr": schedule.get_last_lr()[0]}, step=epoch)
        bar.set_postfix(loss=f"{history[-1]['loss']:.3f}", val_dice=f"{val:.3f}")
        if val > best[0]:
            best = (val, epoch, copy.deepcopy(model.state_dict()))
        if should_stop([h["val_dice"] for h in history], t.patience):
            break
    seconds = time.perf_counter() - started
    steps = sum(h["steps"] for h in history)
    model.load_state_dict(best[2])
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = out_dir / "model.pt"
    meta = {"in_channels": dataset.channels, "classes": dataset.classes, "width": m.width, "depth": m.depth,
            "dropout": m.dropout, "val_dice": best[0], "epoch": best[1]}
    save_checkpoint(model, checkpoint, meta)
    if run is not None:
        run.log_metrics({"best_val_dice": best[0], "best_epoch": best[1], "planned_steps": total, "train_steps": steps,
                         "stop_epoch": epoch, "train_seconds": seconds, "labeled_pixels": len(centres.labeled)})
        run.log_artifact(checkpoint, "checkpoint")
    return TrainResult(checkpoint, best[0], best[1], history, run.run_id if run else None, steps, epoch, seconds)
