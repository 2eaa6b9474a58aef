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

**Crops and loss**: :mod:`activeseg.model.crops` (centres, windows, weights, augmentation) and
:mod:`activeseg.model.losses`; with ``train.semi.method`` other than none, a consistency term on unlabeled
crops of the pool is added (:mod:`activeseg.model.semi`; one process only): it changes neither ``T`` nor the
labeled batches, and the loss recorded per epoch stays the supervised one. CUDA with mixed precision when
available, the same code on CPU.

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
from torch.nn.parallel import DistributedDataParallel

from activeseg.core.config import Config, TrainConfig
from activeseg.core.data import Dataset
from activeseg.model.augment import resolve
from activeseg.model.crops import CropCentres, make_batch
from activeseg.model.inference import predict_mask
from activeseg.core.labels import LabelState
from activeseg.metrics import dice
from activeseg.model.losses import global_batch_loss
from activeseg.model.network import EDConvNet, build_model, pick_device, save_checkpoint
from activeseg.model.pretrain import transfer
from activeseg.model.semi import Semi
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
    pretrained: dict | None = None
    augmentation: dict[str, float] | None = None  # train.augment resolved (activeseg.model.augment)


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
    elif job.pretrained is not None:
        transfer(net, job.pretrained)
    model, share = net, None
    if world > 1:
        if device.type == "cuda":
            net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
        model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
        share = range(rank * t.batch_size // world, (rank + 1) * t.batch_size // world)
        torch.manual_seed(job.seed + rank)  # dropout masks of their own
    semi = Semi.of(t, job.state, job.dataset, net, job.seed, device)
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
            x, y, w = (v.to(device) for v in make_batch(job.state, job.dataset, job.centres, cfg, rng, share,
                                                            job.augmentation))
            with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
                logits = model(x)
            loss, value = global_batch_loss(logits.float(), y, w, t.dice_weight, world)
            if semi is not None:
                loss = loss + semi.loss(model, epoch * t.steps_per_epoch + len(losses))
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            schedule.step()
            if semi is not None:
                semi.after_step(net)
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
                progress: bool = True, pretrained: dict | None = None) -> TrainResult:
    """Train a fresh model (or fine-tune ``init``, a state dict, when ``train.mode`` is finetune; else
    start from ``pretrained``, a state dict of :mod:`activeseg.model.pretrain`, when given) for
    the labeled pixels' number of steps (module docstring) and keep the epoch with the best val Dice,
    in one process or, with ``train.devices`` > 1, in that many DistributedDataParallel processes.

    Writes ``out_dir/model.pt`` (state dict + metadata, load with ``weights_only=True``).
    """
    t = cfg.train
    centres = CropCentres.of(state, t.foreground_oversample)
    if not len(centres.labeled):
        raise ValueError("nothing is labeled yet: reveal an initial set before training")
    job = Job(cfg, dataset, state, centres, val_stems, out_dir, init, seed, pretrained,
              resolve(t.augment, dataset))
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
