"""MC-dropout scoring: throughput against T raw forwards, and peak memory as the pool grows 10x.

    .venv/bin/python benchmarks/mc_dropout.py [--device cpu|cuda] [--passes 8] [--images 20]

Throughput: patches/s of ``mc_dropout_scores`` with T passes, against (raw forward patches/s) / T,
the cost of T plain forward passes of the same model on the same device (target ratio >= 0.9).
Memory: each pool size runs in a fresh process; peak RSS (CPU) or peak CUDA memory, for a pool of N
images and of 10 N images (target: 10x pool <= 1.5x memory).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from activeseg.core.data import load_dataset
from activeseg.model.inference import mc_dropout_scores, region_batches
from activeseg.model.network import EDConvNet
from activeseg.core.partition import partition_image
from activeseg.core.synthetic import synthesize


def setup(folder: Path, images: int, size: int, side: int):
    synthesize(folder, n=images, size=size, seed=0)
    dataset = load_dataset(folder)
    regions = [r for s in dataset.stems for r in partition_image(s, size, size, side, 0.5)]
    return dataset, regions


def raw_forward_rate(model, dataset, regions, batch, device) -> float:
    model.eval()
    start = time.perf_counter()
    with torch.no_grad():
        for _, x, _ in region_batches(dataset, regions, batch):
            model(x.to(device)).float().cpu()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return len(regions) / (time.perf_counter() - start)


def mc_rate(model, dataset, regions, passes, batch, device) -> float:
    start = time.perf_counter()
    mc_dropout_scores(model, dataset, regions, passes, batch, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return len(regions) / (time.perf_counter() - start)


def memory_child(args) -> None:
    """Run one scoring job and print its peak memory (bytes) as JSON."""
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        dataset, regions = setup(Path(tmp), args.images, args.size, args.side)
        model = EDConvNet(3, 2, args.width, args.depth, 0.2).to(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        mc_dropout_scores(model, dataset, regions, args.passes, args.batch, device)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        gpu = torch.cuda.max_memory_allocated() if device.type == "cuda" else 0
    print(json.dumps({"patches": len(regions), "rss_peak": peak, "rss_before": before, "cuda_peak": gpu}))


def measure_memory(args, images: int) -> dict:
    cmd = [sys.executable, __file__, "--child", "--images", str(images)] + [
        f"--{k}={getattr(args, k)}" for k in ("device", "passes", "size", "side", "batch", "width", "depth")]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--passes", type=int, default=8)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return memory_child(args)
    device = torch.device(args.device)
    print(f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else f'{torch.get_num_threads()} threads'}), "
          f"T = {args.passes}, model width {args.width} depth {args.depth}, patches {args.side} px")
    with tempfile.TemporaryDirectory() as tmp:
        dataset, regions = setup(Path(tmp), args.images, args.size, args.side)
        model = EDConvNet(3, 2, args.width, args.depth, 0.2).to(device)
        raw_forward_rate(model, dataset, regions[: args.batch * 2], args.batch, device)  # warm-up
        raw = raw_forward_rate(model, dataset, regions, args.batch, device)
        mc = mc_rate(model, dataset, regions, args.passes, args.batch, device)
    print(f"raw forward:          {raw:10.1f} patches/s")
    print(f"T x raw forward:      {raw / args.passes:10.1f} patches/s (the cost of T plain passes)")
    print(f"MC-dropout scoring:   {mc:10.1f} patches/s")
    print(f"ratio MC / (raw / T): {mc / (raw / args.passes):10.2f}   (target >= 0.9)")
    small, large = measure_memory(args, args.images), measure_memory(args, args.images * 10)
    key = "cuda_peak" if device.type == "cuda" else "rss_peak"
    print(f"peak memory, {small['patches']:6d} patches: {small[key] / 2**20:8.1f} MiB")
    print(f"peak memory, {large['patches']:6d} patches: {large[key] / 2**20:8.1f} MiB")
    print(f"ratio 10x pool / 1x pool: {large[key] / small[key]:.2f}   (target <= 1.5)")


if __name__ == "__main__":
    main()
