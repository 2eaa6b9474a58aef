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

**Several devices** (``train.devices: R`` > 1): PyTorch DistributedDataParallel in ``R`` processes started
by ``torch.multiprocessing.spawn`` from inside this call (rendezvous through a file in a temporary folder;
nccl on CUDA, one GPU per process; gloo on CPU). Decisions: ``batch_size`` stays the *global* batch and the
step budget ``T`` is unchanged, so ``R`` processes run the same ``T`` optimizer steps on ``batch_size / R``
crops each. Every process draws the whole global batch from the same seeded stream and cuts only its share
(samples ``r x B/R .. (r+1) x B/R - 1``), so the union over ranks is exactly the single-process batch. The
loss is the same loss of the *global* batch: its sums (weighted CE, weight, soft-Dice intersections and
denominators) are all-reduced before the ratios are taken, so the value each rank reports, and the gradient
after DDP's averaging, are those of one process on the whole batch. Batch norm: SyncBatchNorm on CUDA
(statistics of the global batch); on CPU torch has no SyncBatchNorm, so each process normalises with its
share's statistics and the running statistics are rank 0's (DDP broadcasts its buffers) -- the one
difference from a single process besides dropout masks (seeded per rank). Validation runs on rank 0, its
Dice is broadcast, and every rank takes the same best-epoch and early-stopping decisions; rank 0 writes the
checkpoint of the unwrapped network in the usual format.
"""

from __future__ import annotations

import copy
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import distributed as dist
from torch import multiprocessing
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel

from activeseg.core.config import Config, TrainConfig
from activeseg.core.data import Dataset
from activeseg.model.inference import predict_mask, to_tensor
from activeseg.core.labels import LabelState
from activeseg.metrics import dice
from activeseg.model.network import EDConvNet, build_model, pick_device, save_checkpoint
from activeseg.core.partition import Region, crop
from activeseg.core.util import read_json, write_json
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
    return dataset.region_pixels(window), target, weight


def augment(x: torch.Tensor, y: torch.Tensor, wgt: torch.Tensor, turns: int, flip: bool):
    """``turns`` 90-degree rotations, then a horizontal flip if ``flip``, of image (C, H, W), target and
    weight (H, W) alike."""
    x, y, wgt = torch.rot90(x, turns, (1, 2)), torch.rot90(y, turns, (0, 1)), torch.rot90(wgt, turns, (0, 1))
    if flip:
        x, y, wgt = x.flip(2), y.flip(1), wgt.flip(1)
    return x, y, wgt


def make_batch(state: LabelState, dataset: Dataset, centres: CropCentres, cfg: Config, rng: np.random.Generator,
               share: range | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Augmented crops of the samples ``share`` (default: all) of a global batch of ``train.batch_size``:
    images (N, C, crop, crop), targets and weights (N, crop, crop). Every sample's centre, rotation and
    flip are drawn from ``rng`` whether in the share or not, so processes with the same stream cut
    disjoint parts of one batch."""
    t = cfg.train
    xs, ys, ws = [], [], []
    for i in range(t.batch_size):
        centre, turns, flip = centres.draw(rng), int(rng.integers(0, 4)), bool(rng.random() < 0.5)
        if share is not None and i not in share:
            continue
        image, target, weight = sample_crop(state, dataset, centre, t.crop, t.pseudo_weight)
        x, y, w = augment(to_tensor(image), torch.from_numpy(target.astype(np.int64)), torch.from_numpy(weight),
                          turns, flip)
        xs.append(x), ys.append(y), ws.append(w)
    return torch.stack(xs), torch.stack(ys), torch.stack(ws)


def loss_sums(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The sums the loss is made of, additive over samples: (2 + 2 (C - 1),) = weighted CE sum, weight
    sum, soft-Dice intersections and denominators of classes 1..C-1. logits (N, C, H, W); target,
    weight (N, H, W)."""
    ce = (F.cross_entropy(logits, target, reduction="none") * weight).sum()
    probs = torch.softmax(logits, dim=1)[:, 1:]
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].float()
    w = weight[:, None]
    inter = (w * probs * onehot).sum(dim=(0, 2, 3))
    denom = (w * probs).sum(dim=(0, 2, 3)) + (w * onehot).sum(dim=(0, 2, 3))
    return torch.cat([ce[None], weight.sum()[None], inter, denom])


def loss_of_sums(sums: torch.Tensor, dice_weight: float) -> torch.Tensor:
    """Weighted CE + dice_weight x (1 - soft Dice) from :func:`loss_sums`."""
    inter, denom = sums[2:].chunk(2)
    soft_dice = ((2 * inter + 1.0) / (denom + 1.0)).mean()
    return sums[0] / sums[1].clamp_min(1.0) + dice_weight * (1 - soft_dice)


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, dice_weight: float) -> torch.Tensor:
    """Weighted CE + dice_weight x (1 - soft Dice). logits (N, C, H, W); target, weight (N, H, W)."""
    return loss_of_sums(loss_sums(logits, target, weight), dice_weight)


def global_batch_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, dice_weight: float,
                      world: int) -> tuple[torch.Tensor, float]:
    """(what to backpropagate, the loss of the global batch) for this process's share of it (shapes as
    :func:`segmentation_loss`). The sums of every rank are all-reduced; only this rank's part carries a
    gradient, scaled by ``world`` because DDP averages the gradients of the ranks: the averaged gradient
    is that of the global batch's loss. With ``world`` 1 it is :func:`segmentation_loss`."""
    sums = loss_sums(logits, target, weight)
    total = sums.detach().clone()
    if world > 1:
        dist.all_reduce(total)
    loss = loss_of_sums(sums - sums.detach() + total, dice_weight)
    return world * loss, loss.item()


def mean_foreground_dice(pred: np.ndarray, gt: np.ndarray, classes: int) -> float:
    """Mean over classes 1..C-1 of the binary Dice; (H, W) class-id arrays."""
    return float(np.mean([dice(pred == c, gt == c) for c in range(1, classes)]))


def validation_dice(model: EDConvNet, dataset: Dataset, stems: list[str], device: torch.device) -> float:
    scores = [mean_foreground_dice(predict_mask(model, dataset.region_pixels(r), device), dataset.region_mask(r),
                                   dataset.classes) for r in dataset.eval_units(stems).values()]
    return float(np.mean(scores))


@dataclass
class Job:
    """One training run's inputs, handed as they are to every process."""

    cfg: Config
    dataset: Dataset
    state: LabelState
    centres: CropCentres
    val_stems: list[str]
    out_dir: Path
    init: dict | None
    seed: int


@dataclass
class Fit:
    """What a training run produced besides the checkpoint (plain values: rank 0 hands it back as JSON)."""

    history: list[dict]
    val_dice: float
    best_epoch: int
    stop_epoch: int
    train_steps: int
    train_seconds: float
    planned_steps: int


def distributed_backend(device: torch.device, devices: int, cuda_devices: int) -> str:
    """The torch.distributed backend for ``devices`` processes on ``device`` (nccl on CUDA, gloo on CPU);
    a clear error when ``devices`` exceeds the ``cuda_devices`` visible or the device has no backend."""
    backend = {"cuda": "nccl", "cpu": "gloo"}.get(device.type)
    if backend is None:
        raise RuntimeError(f"train.devices is {devices}, but training on {device.type} runs in one process only "
                           "(several processes: cuda with nccl, cpu with gloo); set train.devices: 1")
    if device.type == "cuda" and devices > cuda_devices:
        raise RuntimeError(f"train.devices is {devices}, but only {cuda_devices} CUDA device(s) are visible "
                           "(CUDA_VISIBLE_DEVICES); lower train.devices in params.yaml")
    if not (dist.is_available() and dist.is_backend_available(backend)):
        raise RuntimeError(f"train.devices is {devices}, but this torch build has no {backend} backend for "
                           f"{device.type}; set train.devices: 1")
    return backend


def process_device(train: TrainConfig, rank: int, world: int) -> torch.device:
    """The device of process ``rank`` of ``world``: GPU ``rank`` on CUDA, else the CPU, where each of several
    processes gets ``train.threads`` torch threads (0: the cores split evenly)."""
    threads = train.threads if train.threads or world == 1 else max(1, (os.cpu_count() or 1) // world)
    device = pick_device(train.device, threads)
    if device.type != "cuda" or world == 1:
        return device
    torch.cuda.set_device(rank)
    return torch.device("cuda", rank)


def from_rank0(value: float, device: torch.device) -> float:
    """Rank 0's ``value``, on every rank."""
    box = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(box, 0)
    return float(box.item())


def log_epoch(run: RunLog, record: dict) -> None:
    run.log_metrics({"loss": record["loss"], "val_dice": record["val_dice"], "lr": record["lr"]}, step=record["epoch"])


def fit(job: Job, device: torch.device, rank: int = 0, world: int = 1,
        on_epoch: Callable[[dict], None] | None = None, progress: bool = False) -> Fit:
    """The training loop of process ``rank`` of ``world`` (module docstring); rank 0 validates and writes
    ``job.out_dir/model.pt``."""
    from tqdm import tqdm

    cfg, t, m = job.cfg, job.cfg.train, job.cfg.model
    torch.manual_seed(job.seed)
    rng = np.random.default_rng(job.seed)
    net = build_model(job.dataset.channels, job.dataset.classes, m.width, m.depth, m.dropout).to(device)
    if job.init is not None and t.mode == "finetune":
        net.load_state_dict(job.init)
    model, share = net, None
    if world > 1:
        if device.type == "cuda":
            net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
        model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
        share = range(rank * t.batch_size // world, (rank + 1) * t.batch_size // world)
        torch.manual_seed(job.seed + rank)  # dropout masks of their own
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    total = planned_steps(len(job.centres.labeled), t)
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
            x, y, w = (v.to(device) for v in make_batch(job.state, job.dataset, job.centres, cfg, rng, share))
            with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
                logits = model(x)
            loss, value = global_batch_loss(logits.float(), y, w, t.dice_weight, world)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            schedule.step()
            losses.append(value)
        val = validation_dice(net, job.dataset, job.val_stems, device) if rank == 0 else 0.0
        val = from_rank0(val, device) if world > 1 else val
        history.append({"epoch": epoch, "steps": len(losses), "loss": float(np.mean(losses)), "val_dice": val,
                        "lr": schedule.get_last_lr()[0]})
        if on_epoch is not None:
            on_epoch(history[-1])
        bar.set_postfix(loss=f"{history[-1]['loss']:.3f}", val_dice=f"{val:.3f}")
        if val > best[0]:
            best = (val, epoch, copy.deepcopy(net.state_dict()) if rank == 0 else None)
        if should_stop([h["val_dice"] for h in history], t.patience):
            break
    seconds = time.perf_counter() - started
    if rank == 0:
        net.load_state_dict(best[2])
        job.out_dir.mkdir(parents=True, exist_ok=True)
        save_checkpoint(net, job.out_dir / "model.pt", {
            "in_channels": job.dataset.channels, "classes": job.dataset.classes, "width": m.width, "depth": m.depth,
            "dropout": m.dropout, "val_dice": best[0], "epoch": best[1]})
    return Fit(history, best[0], best[1], epoch, sum(h["steps"] for h in history), seconds, total)


def run_rank(rank: int, world: int, backend: str, folder: Path, job: Job, progress: bool) -> None:
    """One process of distributed training (started by :func:`fit_distributed`); rank 0 writes
    ``folder/fit.json``."""
    device = process_device(job.cfg.train, rank, world)
    dist.init_process_group(backend, init_method=(folder / "rendezvous").as_uri(), rank=rank, world_size=world)
    try:
        result = fit(job, device, rank, world, progress=progress and rank == 0)
        if rank == 0:
            write_json(folder / "fit.json", asdict(result))
    finally:
        dist.destroy_process_group()


def fit_distributed(job: Job, world: int, progress: bool = False) -> Fit:
    """:func:`fit` in ``world`` DistributedDataParallel processes spawned here (a rendezvous file in a
    temporary folder); an error in any process is raised here with its traceback."""
    backend = distributed_backend(pick_device(job.cfg.train.device), world, torch.cuda.device_count())
    with tempfile.TemporaryDirectory(prefix="activeseg-ddp-") as folder:
        multiprocessing.spawn(run_rank, args=(world, backend, Path(folder), job, progress), nprocs=world)
        return Fit(**read_json(Path(folder) / "fit.json"))


def train_model(cfg: Config, dataset: Dataset, state: LabelState, val_stems: list[str], out_dir: Path,
                run: RunLog | None = None, init: dict | None = None, seed: int = 0,
                progress: bool = True) -> TrainResult:
    """Train a fresh model (or fine-tune ``init``, a state dict, when ``train.mode`` is finetune) for
    the labeled pixels' number of steps (module docstring) and keep the epoch with the best val Dice,
    in one process or, with ``train.devices`` > 1, in that many DistributedDataParallel processes.

    Writes ``out_dir/model.pt`` (state dict + metadata, load with ``weights_only=True``).
    """
    t = cfg.train
    centres = CropCentres.of(state, t.foreground_oversample)
    if not len(centres.labeled):
        raise ValueError("nothing is labeled yet: reveal an initial set before training")
    job = Job(cfg, dataset, state, centres, val_stems, out_dir, init, seed)
    if t.devices == 1:
        on_epoch = None if run is None else (lambda record: log_epoch(run, record))
        result = fit(job, process_device(t, 0, 1), on_epoch=on_epoch, progress=progress)
    else:
        result = fit_distributed(job, t.devices, progress)
        if run is not None:
            for record in result.history:
                log_epoch(run, record)
    checkpoint = out_dir / "model.pt"
    if run is not None:
        run.log_metrics({"best_val_dice": result.val_dice, "best_epoch": result.best_epoch,
                         "planned_steps": result.planned_steps, "train_steps": result.train_steps,
                         "stop_epoch": result.stop_epoch, "train_seconds": result.train_seconds,
                         "labeled_pixels": len(centres.labeled)})
        run.log_artifact(checkpoint, "checkpoint")
    return TrainResult(checkpoint, result.val_dice, result.best_epoch, result.history, run.run_id if run else None,
                       result.train_steps, result.stop_epoch, result.train_seconds)
