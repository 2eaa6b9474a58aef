"""Whole-slide pool (issue 12): partition time and memory, scoring throughput, memory as slides grow 10x.

    .venv/bin/python benchmarks/slide_pool.py [--slides 5] [--size 6144] [--tile 32] [--score 256] [--threads 2]

Writes ``--slides`` synthetic pyramidal TIFFs once into a temporary folder (``--size`` px square at level 0,
4 levels, 128 px TIFF tiles: a mosaic of six rendered 256 px blocks in the bright-field stains, the right
third blank glass, with level-0 masks), then measures, each in a fresh subprocess:

- partition: ``load_dataset`` + ``pool_regions`` (tissue on the thumbnail, then ``--tile`` px tiles at
  level 0, no overlap): seconds, tiles, peak RSS (and RSS after the imports, before any slide is opened);
- scoring: ``mc_dropout_scores`` of ``--score`` tiles spread evenly over the pool (T = 8, batch 16,
  EDConvNet width 16 depth 3, untrained, ``--threads`` torch threads): regions/s, and pixel reads alone;
- memory: partition + scoring of the same ``--score`` tiles spread over N slides and over 10 N slides
  (the 10 N are hard links of the N under other names: the same bytes on disk): peak RSS ratio
  (target <= 1.5x).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BLOCK = 256


def write_slides(folder: Path, count: int, size: int) -> None:
    """``count`` slides ``slide-<i>.tif`` (and masks) of ``size`` x ``size`` px under ``folder``."""
    from activeseg.core.slides import write_pyramid
    from activeseg.core.synthetic import OBJECT_TYPES, STYLES, render

    rng = np.random.default_rng(0)
    bright = [s for s in STYLES if s.name != "darkfield"]
    blocks = [render(rng, OBJECT_TYPES[0].shape(bright[k % len(bright)]), BLOCK, 2) for k in range(6)]
    (folder / "slides").mkdir(parents=True)
    (folder / "slide_masks").mkdir()
    cells = size // BLOCK
    for i in range(count):
        image = np.full((size, size, 3), 255, np.uint8)
        mask = np.zeros((size, size), np.uint8)
        for r in range(cells):
            for c in range(cells * 2 // 3):
                k = (r * 7 + c * 3 + i) % len(blocks)
                box = np.s_[r * BLOCK : (r + 1) * BLOCK, c * BLOCK : (c + 1) * BLOCK]
                image[box], mask[box] = blocks[k]
        write_pyramid(folder / "slides" / f"slide-{i}.tif", image, levels=4, tile=128)
        write_pyramid(folder / "slide_masks" / f"slide-{i}.tif", mask, levels=1, tile=128)


def link_copies(source: Path, folder: Path, times: int) -> None:
    """``times`` hard links of every slide and mask of ``source`` under new stems in ``folder``."""
    for part in ("slides", "slide_masks"):
        (folder / part).mkdir(parents=True)
        for path in sorted((source / part).iterdir()):
            for k in range(times):
                os.link(path, folder / part / f"{path.stem}-copy{k}{path.suffix}")


def rss_mb() -> float:
    """Current resident set size (MB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(data: Path, tile: int, score: int, threads: int) -> dict:
    """Partition the pool, then score ``score`` tiles spread over it; figures as a dict."""
    import torch

    from activeseg.core.config import load_config
    from activeseg.core.data import load_dataset
    from activeseg.core.pool import pool_regions
    from activeseg.model.inference import mc_dropout_scores
    from activeseg.model.network import EDConvNet

    torch.set_num_threads(threads)
    cfg = load_config(None, [f"partition.side={tile}", "partition.overlap=0"])
    baseline = rss_mb()
    start = time.perf_counter()
    dataset = load_dataset(data, 2, cfg.data.slides)
    regions = pool_regions(dataset, dataset.stems, cfg)
    partition_s = time.perf_counter() - start
    partition_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    picked = [regions[i] for i in np.linspace(0, len(regions) - 1, score).astype(int)]
    start = time.perf_counter()
    for region in picked:
        dataset.region_pixels(region)
    read_s = time.perf_counter() - start
    model = EDConvNet(3, 2, 16, 3, 0.2)
    mc_dropout_scores(model, dataset, picked[:32], 8, 16, torch.device("cpu"))  # warm-up
    start = time.perf_counter()
    mc_dropout_scores(model, dataset, picked, 8, 16, torch.device("cpu"))
    score_s = time.perf_counter() - start
    return {"slides": len(dataset.stems), "tiles": len(regions), "partition_s": partition_s,
            "rss_after_imports_mb": baseline, "partition_peak_rss_mb": partition_peak,
            "reads_per_s": score / read_s, "regions_per_s": score / score_s,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_child(data: Path, args: argparse.Namespace) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", str(data), "--tile", str(args.tile),
                          "--score", str(args.score), "--threads", str(args.threads)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slides", type=int, default=5)
    parser.add_argument("--size", type=int, default=6144)
    parser.add_argument("--tile", type=int, default=32)
    parser.add_argument("--score", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.tile, args.score, args.threads)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        few, many = Path(tmp) / "few", Path(tmp) / "many"
        start = time.perf_counter()
        write_slides(few, args.slides, args.size)
        link_copies(few, many, 10)
        print(f"wrote {args.slides} slides of {args.size} px (4 levels) in {time.perf_counter() - start:.1f} s")
        small, large = run_child(few, args), run_child(many, args)
    for name, r in (("N", small), ("10N", large)):
        print(f"{name:>3}: {r['slides']} slides, {r['tiles']} tiles of {args.tile} px: partition "
              f"{r['partition_s']:.2f} s (peak RSS {r['partition_peak_rss_mb']:.0f} MB, "
              f"{r['rss_after_imports_mb']:.0f} MB after imports); reads {r['reads_per_s']:.0f} tiles/s; "
              f"MC dropout (T=8) {r['regions_per_s']:.0f} regions/s; peak RSS {r['peak_rss_mb']:.0f} MB")
    print(f"peak RSS 10N / N: {large['peak_rss_mb'] / small['peak_rss_mb']:.2f} (target <= 1.5)")


if __name__ == "__main__":
    main()
