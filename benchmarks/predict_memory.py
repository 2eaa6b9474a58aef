"""`activeseg predict`: peak memory against the image side, and tiled against whole-image inference.

    .venv/bin/python benchmarks/predict_memory.py [--steps 150] [--sides 1024,4096] [--compare 2048]

A model of the default shape (model.width 16, depth 3) is trained for --steps steps on 48 synthetic
256 px images (all pixels labeled). Test images are mosaics of synthetic 256 px images (cells at the
scale the model was trained on), RGB PNG. Memory: `activeseg predict` on one mosaic of each side in a fresh
process (default tiling: 512 px tiles, 128 px overlap), its peak RSS and seconds; the ratio of the largest
to the smallest side's peak RSS (target <= 1.5x for 1k vs 4k). Agreement: on a --compare px mosaic,
the tiled mask against whole-image inference (`predict_probs`): Dice, pixels that differ, and those
that differ outside the overlap bands where whole-image inference is decided (|p1 - p0| > 1e-4).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from activeseg.core.config import load_config
from activeseg.core.data import Dataset, load_dataset, read_image, read_pixels
from activeseg.core.labels import LabelState
from activeseg.core.partition import Region
from activeseg.core.synthetic import synthesize
from activeseg.loop.oracle import reveal_from_ground_truth
from activeseg.metrics import dice
from activeseg.model.inference import predict_probs
from activeseg.model.network import load_checkpoint
from activeseg.model.prediction import Tiling, predict_image, tile_starts
from activeseg.model.training import train_model

CHILD = """
import resource, sys, time
from activeseg.cli.main import main
started = time.perf_counter()
code = main(["predict", "--model", sys.argv[1], "--images", sys.argv[2], "--out", sys.argv[3], "--quiet",
             "--set", "train.device=cpu"])
print(code, time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def train(dataset: Dataset, out: Path, steps: int) -> Path:
    """A default-shaped model trained on the first 48 images, validated on the next 4."""
    cfg = load_config(None, [f"train.min_steps={steps}", f"train.max_steps={steps}", "train.steps_per_epoch=50",
                             "train.patience=0", "train.device=cpu", "tracking.mlflow=false"])
    stems = dataset.stems
    state = LabelState.empty({s: (256, 256) for s in stems[:48]})
    reveal_from_ground_truth(state, dataset, [Region(s, 0, 0, 256, 256) for s in stems[:48]], 0)
    return train_model(cfg, dataset, state, stems[48:52], out, progress=False).checkpoint


def mosaic(dataset: Dataset, side: int, folder: Path) -> tuple[Path, np.ndarray]:
    """A ``side`` px RGB PNG tiled with the dataset's images in turn, and its (side, side) mask."""
    cells = side // 256
    stems = dataset.stems
    image = np.zeros((side, side, 3), np.uint8)
    mask = np.zeros((side, side), np.uint8)
    for k in range(cells * cells):
        y, x, stem = (k // cells) * 256, (k % cells) * 256, stems[k % len(stems)]
        image[y:y + 256, x:x + 256] = np.asarray(Image.open(dataset.samples[stem].image_path).convert("RGB"))
        mask[y:y + 256, x:x + 256] = dataset.mask(stem)
    folder.mkdir(parents=True)
    path = folder / f"mosaic-{side}.png"
    Image.fromarray(image).save(path)
    return path, mask


def peak_memory(checkpoint: Path, image: Path, out: Path) -> tuple[float, float]:
    """Seconds and peak RSS (MiB) of `activeseg predict` on the folder of ``image``, in a fresh process."""
    result = subprocess.run([sys.executable, "-c", CHILD, str(checkpoint), str(image.parent), str(out)],
                            capture_output=True, text=True, check=True)
    code, seconds, rss = result.stdout.split()[-3:]
    assert code == "0", result.stdout + result.stderr
    return float(seconds), float(rss)


def agreement(checkpoint: Path, image: Path, truth: np.ndarray) -> dict[str, float]:
    model, _ = load_checkpoint(checkpoint)
    cpu = torch.device("cpu")
    started = time.perf_counter()
    whole = predict_probs(model, read_image(image), cpu)
    whole_seconds = time.perf_counter() - started
    started = time.perf_counter()
    tiling = Tiling()
    tiled = predict_image(model, read_pixels(image), cpu, tiling).mask
    tiled_seconds = time.perf_counter() - started
    expected = whole.argmax(0)
    side = expected.shape[0]
    counts = np.zeros(side, int)
    for start in tile_starts(side, tiling.tile, tiling.tile - tiling.overlap):
        counts[start:start + tiling.tile] += 1
    single = np.outer(counts == 1, counts == 1)
    decided = np.abs(whole[1] - whole[0]) > 1e-4
    return {"dice_tiled_vs_whole": dice(tiled == 1, expected == 1), "pixels": expected.size,
            "differing_pixels": int((tiled != expected).sum()),
            "differing_outside_overlaps_where_decided": int((tiled != expected)[single & decided].sum()),
            "share_outside_overlaps": float(single.mean()),
            "dice_whole_vs_truth": dice(expected == 1, truth == 1), "whole_seconds": whole_seconds,
            "tiled_seconds": tiled_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--sides", default="1024,4096")
    parser.add_argument("--compare", type=int, default=2048)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        dataset = load_dataset(synthesize(root / "data", n=64, size=256, seed=0), classes=2)
        checkpoint = train(dataset, root / "model", args.steps)
        print(f"trained {args.steps} steps in {time.perf_counter() - started:.0f} s (with the synthetic data)")
        memory = {}
        for side in [int(s) for s in args.sides.split(",")]:
            image, _ = mosaic(dataset, side, root / f"images-{side}")
            seconds, rss = peak_memory(checkpoint, image, root / f"out-{side}")
            memory[side] = rss
            print(f"predict {side} x {side} px: peak RSS {rss:.0f} MiB, {seconds:.1f} s (fresh process)")
        small, large = min(memory), max(memory)
        print(f"peak RSS ratio {large} px / {small} px: {memory[large] / memory[small]:.2f}x (target <= 1.5x)")
        image, truth = mosaic(dataset, args.compare, root / f"compare-{args.compare}")
        result = agreement(checkpoint, image, truth)
        print(f"{args.compare} px, tiled vs whole-image: " + json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
