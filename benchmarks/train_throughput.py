"""Training throughput: images/s of ``train_model`` against the same model's isolated forward+backward,
and 1 against N DistributedDataParallel processes (``train.devices``).

    .venv/bin/python benchmarks/train_throughput.py [--device auto|cpu|cuda] [--devices 1 2] [--steps 40]
                                                    [--batch 8] [--crop 64] [--width 16] [--depth 3] [--threads 0]

Isolated: optimizer steps (forward, the training loss, backward, AdamW; mixed precision on CUDA) of the
project's EDConvNet on one fixed batch of real crops already on the device: the ceiling. Training:
``train_model`` for ``--steps`` steps of a global batch of ``--batch`` crops (crop sampling and
augmentation on the CPU, validation every 20 steps on 2 images included), images/s =
steps x batch / ``train_seconds`` (the processes' start-up excluded; the wall time with it is printed
too). The ratio training / isolated is the share of the device the training loop uses (goal on a GPU
with AMP: >= 60 %). On CPU, images per CPU-second (user + system time of this process and its
children; with N processes it includes their start-up) are printed too: on a shared machine wall time
follows the other load, CPU time much less. On CPU the N processes share the machine's cores (cores / N torch threads each, or
``--threads`` each: ``train.threads``; it also sets the isolated run's and the single process's threads).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from activeseg.core.config import Config, load_config
from activeseg.core.data import Dataset, load_dataset
from activeseg.core.labels import LabelState
from activeseg.core.partition import Region
from activeseg.core.synthetic import synthesize
from activeseg.loop.oracle import reveal_from_ground_truth
from activeseg.model.network import build_model, pick_device
from activeseg.model.crops import CropCentres, make_batch
from activeseg.model.losses import segmentation_loss
from activeseg.model.training import train_model


def config(args, devices: int) -> Config:
    return load_config(None, [
        f"model.width={args.width}", f"model.depth={args.depth}", f"train.batch_size={args.batch}",
        f"train.crop={args.crop}", f"train.min_steps={args.steps}", f"train.max_steps={args.steps}",
        "train.steps_per_epoch=20", "train.patience=0", f"train.device={args.device}", f"train.devices={devices}",
        f"train.threads={args.threads}", "tracking.mlflow=false"])


def cpu_seconds() -> float:
    """User + system time of this process and its finished children."""
    return sum(u.ru_utime + u.ru_stime for u in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)))


def isolated_rate(cfg: Config, dataset: Dataset, state: LabelState, device: torch.device,
                  steps: int) -> tuple[float, float]:
    """Images per second and per CPU-second of forward + loss + backward + AdamW step on one fixed batch
    (N, C, crop, crop) on ``device``."""
    t, m = cfg.train, cfg.model
    x, y, w = (v.to(device) for v in make_batch(state, dataset, CropCentres.of(state, 0.0), cfg,
                                                 np.random.default_rng(0)))
    model = build_model(dataset.channels, dataset.classes, m.width, m.depth, m.dropout).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            logits = model(x)
        opt.zero_grad(set_to_none=True)
        scaler.scale(segmentation_loss(logits.float(), y, w, t.dice_weight)).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(3):  # warm-up (cuDNN autotuning, allocator)
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, cpu = time.perf_counter(), cpu_seconds()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    images = steps * t.batch_size
    return images / (time.perf_counter() - start), images / (cpu_seconds() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    device = pick_device(args.device, args.threads)
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
          f"AMP {device.type == 'cuda'}, torch threads {torch.get_num_threads()}; EDConvNet width {args.width} depth "
          f"{args.depth}, global batch {args.batch} crops of {args.crop}, {args.steps} steps")
    with tempfile.TemporaryDirectory() as tmp:
        dataset = load_dataset(synthesize(Path(tmp) / "data", n=args.images, size=args.size, seed=0))
        train, val = dataset.stems[:-2], dataset.stems[-2:]
        state = LabelState.empty({s: (dataset.samples[s].height, dataset.samples[s].width) for s in train})
        reveal_from_ground_truth(state, dataset, [Region(s, 0, 0, *state.shapes[s]) for s in train], 0)
        isolated, isolated_cpu = isolated_rate(config(args, 1), dataset, state, device, args.steps)
        print(f"isolated forward+backward: {isolated:.1f} images/s, {isolated_cpu:.1f} images/CPU-s")
        for devices in args.devices:
            start, cpu = time.perf_counter(), cpu_seconds()
            result = train_model(config(args, devices), dataset, state, val, Path(tmp) / f"run{devices}", progress=False)
            wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
            images = result.train_steps * args.batch
            rate = images / result.train_seconds
            print(f"train_model, {devices} process(es): {rate:.1f} images/s ({result.train_steps} steps in "
                  f"{result.train_seconds:.1f} s; wall with start-up {wall:.1f} s), {images / cpu:.1f} images/CPU-s; "
                  f"training / isolated = {rate / isolated:.0%} (per CPU-s {images / cpu / isolated_cpu:.0%})")


if __name__ == "__main__":
    main()
