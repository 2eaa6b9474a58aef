"""Augmentation of a (8, 3, 64, 64) batch on the CPU: activeseg.model.augment against kornia.

    .venv/bin/python benchmarks/augment_speed.py [--repeats 200] [--threads 1]

Both apply the histology preset's geometric and intensity transforms (zoom, rotation, elastic,
brightness, contrast, gamma, blur, noise) to image, target and weight; kornia has no HED stain
augmentation, so the stain step is timed on its own. kornia is not a dependency: install it beside
(``pip install --target DIR kornia==0.9.0 kornia_rs==0.2.0`` and ``PYTHONPATH=DIR``); without it only
the torch figures are printed. Prints milliseconds per batch (median of ``--repeats``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from activeseg.core.config import AUGMENT_PRESETS
from activeseg.model.augment import augment_batch, draw, stain

SHAPE = (8, 3, 64, 64)


def median_ms(step: Callable[[], object], repeats: int) -> float:
    step()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def kornia_pipeline(s: dict[str, float]) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], list]:
    """The same transforms in kornia.augmentation (one call per batch; masks by nearest neighbour)."""
    import kornia.augmentation as K

    seq = K.AugmentationSequential(
        K.RandomAffine(degrees=s["rotation"], scale=(torch.exp(torch.tensor(-s["scale"])).item(),
                                                     torch.exp(torch.tensor(s["scale"])).item()), p=1.0),
        K.RandomElasticTransform(alpha=(s["elastic"], s["elastic"]), p=1.0),
        K.ColorJiggle(brightness=s["brightness"], contrast=s["contrast"], p=1.0),
        K.RandomGamma(gamma=(float(torch.exp(torch.tensor(-s["gamma"]))), float(torch.exp(torch.tensor(s["gamma"])))),
                      p=1.0),
        K.RandomGaussianBlur(kernel_size=(7, 7), sigma=(0.01, s["blur"]), p=1.0),
        K.RandomGaussianNoise(std=s["noise"], p=1.0),
        data_keys=["input", "mask", "mask"])
    return lambda x, y, w: seq(x, y[:, None].float(), w[:, None])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(SHAPE, generator=gen)
    y, w = (x[:, 0] > 0.5).long(), torch.ones(SHAPE[0], *SHAPE[2:])
    s = AUGMENT_PRESETS["histology"]
    no_stain = {**s, "stain": 0.0}
    n, c, side = SHAPE[0], SHAPE[1], SHAPE[-1]
    print(f"CPU, {args.threads} thread(s), batch {SHAPE}, median of {args.repeats}, ms per batch")
    for label, strengths in (("without stain", no_stain), ("whole preset ", s)):
        ms = median_ms(lambda: augment_batch(x, y, w, strengths, draw(strengths, n, c, side, gen)), args.repeats)
        print(f"activeseg (torch) {label}: {ms:.2f}")
    scale, shift = 1 + 0.05 * torch.randn(n, 3, generator=gen), 0.05 * torch.randn(n, 3, generator=gen)
    print(f"HED stain alone (torch):         {median_ms(lambda: stain(x, scale, shift), args.repeats):.2f}")
    try:
        pipeline = kornia_pipeline(s)
    except ImportError:
        print("kornia: not installed (see the docstring)")
        return
    print(f"kornia without stain:            {median_ms(lambda: pipeline(x, y, w), args.repeats):.2f}")


if __name__ == "__main__":
    main()
