"""ISBI 2012 EM for the CPU benchmark: downsampled, with the membranes as the foreground class.

The shared copy (``../shared/datasets/isbi2012-em``) has 30 grey images of 512 px and masks with
cells 255 (about 80 % of the pixels) and membranes 0. The challenge scores membranes, and a Dice over an
80 % class says little, so the benchmark's foreground (class 1) is the membrane. Images are reduced by
``--factor`` with area averaging; a reduced mask pixel is membrane when at least half of its block is.

    .venv/bin/python benchmarks/prepare_isbi.py ../shared/datasets/isbi2012-em bench-output/isbi-256 --factor 2
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image


def block_mean(array: np.ndarray, factor: int) -> np.ndarray:
    """(H, W) -> (H // factor, W // factor): the mean of each factor x factor block."""
    h, w = (array.shape[0] // factor) * factor, (array.shape[1] // factor) * factor
    return array[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


def prepare(source: Path, out: Path, factor: int) -> int:
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    stems = sorted(p.stem for p in (source / "images").glob("*.png"))
    for stem in stems:
        image = np.asarray(Image.open(source / "images" / f"{stem}.png").convert("L"), dtype=np.float64)
        membrane = np.asarray(Image.open(source / "masks" / f"{stem}.png")) == 0
        Image.fromarray(np.round(block_mean(image, factor)).astype(np.uint8)).save(out / "images" / f"{stem}.png")
        mask = (block_mean(membrane.astype(np.float64), factor) >= 0.5).astype(np.uint8) * 255
        Image.fromarray(mask).save(out / "masks" / f"{stem}.png")
    return len(stems)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--factor", type=int, default=2)
    args = parser.parse_args()
    n = prepare(args.source, args.out, args.factor)
    print(f"{n} images of {args.source} reduced {args.factor}x, membranes as class 1, in {args.out}")


if __name__ == "__main__":
    main()
