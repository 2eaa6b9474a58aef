"""Cost of the pretrain step's computation (activeseg.model.pretrain) on this machine, one torch thread.

    .venv/bin/python benchmarks/pretrain_cost.py [--params params.yaml] [--set key=value ...]

The campaign `activeseg init` makes with the given settings (default: params.yaml at the repository root,
the synthetic dataset): the dataset synthesized into a temporary folder, its split and the training pool as
a workspace has them, then `pretrain.steps` steps of masked-reconstruction pretraining on the pool.
Prints the pool, the seconds (budget: 5 minutes for the synthetic default, 10 for the ISBI settings of
benchmarks/params/isbi-patch.yaml, whose step costs what `--set model.width=8` costs here) and the
reconstruction loss at the start and the end.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from activeseg.core.config import load_config
from activeseg.core.data import load_dataset, make_split
from activeseg.core.pool import pool_regions
from activeseg.core.synthetic import synthesize
from activeseg.model.pretrain import pretrain_model

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(args.params, args.overrides)
    with tempfile.TemporaryDirectory() as folder:
        data = cfg.data.synthetic
        root = synthesize(Path(folder) / "data", n=data.n, size=data.size, seed=data.seed,
                          style_weights=data.style_weights, object_weights=data.object_weights) \
            if cfg.data.dataset == "synthetic" else Path(cfg.data.dataset)
        dataset = load_dataset(root, cfg.data.classes, cfg.data.slides)
        split = make_split(dataset.stems, cfg.data.split.train, cfg.data.split.val, cfg.data.seed)
        regions = pool_regions(dataset, split["train"], cfg)
        result = pretrain_model(cfg, dataset, regions, torch.device("cpu"))
    p = cfg.pretrain
    print(f"pool: {len(split['train'])} images, {len(regions)} regions; model width {cfg.model.width}, "
          f"depth {cfg.model.depth}")
    print(f"pretrain: {p.steps} steps of {p.batch_size} crops of {p.crop} px, 1 torch thread: {result.seconds:.1f} s "
          f"({1000 * result.seconds / p.steps:.0f} ms a step)")
    print(f"reconstruction loss: {np.mean(result.losses[:10]):.3f} (first 10 steps) -> "
          f"{np.mean(result.losses[-10:]):.3f} (last 10)")


if __name__ == "__main__":
    main()
