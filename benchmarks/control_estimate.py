"""The control arm's estimate of the model's Dice on the unlabeled pool against the truth (activeseg.loop.control).

    .venv/bin/python benchmarks/control_estimate.py [--params params.yaml] [--set key=value ...]
        [--seeds 0 1 2 3 4] [--rounds 4] [--redraws 200] [--out bench-output/control-estimate]

Simulated campaigns on the given settings (default: params.yaml, the synthetic default, with the small
settings below), each round as a workspace runs it: the model trains on the revealed labels (fine-tuned from
the previous round's), the strategy picks on its share of the budget (``query.control_fraction`` left for the
controls), the controls are drawn as :func:`activeseg.workspace.querying._select` draws them, and both are
revealed from the ground truth for the next round. Before that reveal, the model that queried predicts every
region of the pool the strategy left (the estimand's population): the truth is their mean per-region Dice
against the ground truth; the estimate is the controls' mean with its 95 % (Wilson) interval.

Prints one line per round (seeds x rounds, 20 by default), then the coverage of the interval (target: at
least 90 % of the rounds) and the mean absolute error of the estimate; and, as a finer check of the same
estimator on the same models, the coverage over ``--redraws`` fresh draws of the controls per round. Writes
``results.json`` to ``--out``.

Small settings (overridable with --set): ``partition.side=32`` (about 690 regions of 1024 px in the pool)
and ``query.control_fraction=0.5``, so that a round draws five or six controls: the default share of the
synthetic default's budget, 10 % of 5 % of the pool, buys a single 64 px region, which gives an estimate
but no interval.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from activeseg.core.config import Config, load_config
from activeseg.core.data import Dataset, load_dataset, make_split
from activeseg.core.labels import LabelState
from activeseg.core.pool import initial_regions, pool_regions, round_budget
from activeseg.core.synthetic import synthesize
from activeseg.loop.control import (control_rng, draw_controls, pool_estimate, pool_left, region_dices, split_budget,
                                    strategy_settings)
from activeseg.loop.oracle import ground_truth, reveal_from_ground_truth
from activeseg.loop.selection import select_regions
from activeseg.model.network import load_checkpoint
from activeseg.model.training import train_model

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["partition.side=32", "query.control_fraction=0.5"]


def dataset_of(cfg: Config, folder: Path) -> Dataset:
    """The campaign's dataset: synthesized into ``folder`` (``data.dataset: synthetic``) or the named folder."""
    data = cfg.data.synthetic
    root = synthesize(folder / "data", n=data.n, size=data.size, seed=data.seed, style_weights=data.style_weights,
                      object_weights=data.object_weights) if cfg.data.dataset == "synthetic" else Path(cfg.data.dataset)
    return load_dataset(root, cfg.data.classes, cfg.data.slides)


def campaign(cfg: Config, dataset: Dataset, split: dict[str, list[str]], seed: int, rounds: int, redraws: int,
             folder: Path) -> list[dict]:
    """One seed's rounds (module docstring); one row per round."""
    regions = pool_regions(dataset, split["train"], cfg)
    state = LabelState.empty({s: (dataset.samples[s].height, dataset.samples[s].width) for s in split["train"]})
    reveal_from_ground_truth(state, dataset, initial_regions(regions, cfg.partition.initial_labeled, seed), 0)
    init, rows = None, []
    for k in range(1, rounds + 1):
        result = train_model(cfg, dataset, state, split["val"], folder / f"round-{k}", init=init, seed=seed * 1000 + k,
                             progress=False)
        init = torch.load(result.checkpoint, weights_only=True)["state_dict"]
        rows.append(query_round(cfg, dataset, split, state, regions, result.checkpoint, seed, k, redraws, folder))
        print(f"seed {seed} round {k}: " + ", ".join(f"{key} {value:.4f}" if isinstance(value, float) else
                                                      f"{key} {value}" for key, value in rows[-1].items()), flush=True)
    return rows


def query_round(cfg: Config, dataset: Dataset, split: dict[str, list[str]], state: LabelState, regions: list,
                checkpoint: Path, seed: int, k: int, redraws: int, folder: Path) -> dict:
    """Round ``k``'s picks and controls, the truth and the estimate; then both revealed into ``state``."""
    strategy_budget, control_budget = split_budget(round_budget(cfg, state), cfg.query.control_fraction)
    selection, ctx = select_regions(strategy_settings(cfg, strategy_budget), cfg.query.strategy, dataset, split, state,
                                    regions, checkpoint, k, seed, folder / "cache")
    picks = selection.indices
    controls, _ = draw_controls(ctx, picks, control_budget, control_rng(seed, k))
    population, _ = pool_left(ctx, picks)
    model, _ = load_checkpoint(checkpoint)
    scored = [ctx.candidates[i] for i in [*population, *picks]]
    truths = [ground_truth(dataset, r) for r in scored]
    dices = dict(zip([r.id for r in scored], region_dices(model, dataset, scored, truths, torch.device("cpu"))))

    def dice_of(indices: list[int]) -> list[float]:
        return [dices[ctx.candidates[i].id] for i in indices]

    def redraw(r: int) -> list[int]:
        return draw_controls(ctx, picks, control_budget, np.random.default_rng([seed, k, r, 1]))[0]

    truth = float(np.mean(dice_of(population)))
    mean, low, high = pool_estimate(dice_of(controls))
    redrawn = [pool_estimate(dice_of(redraw(r))) for r in range(redraws)]
    reveal_from_ground_truth(state, dataset, [ctx.candidates[i] for i in [*picks, *controls]], k)
    return {"seed": seed, "round": k, "pool": len(population), "controls": len(controls), "truth": truth,
            "estimate": mean, "low": low, "high": high, "covered": low is not None and low <= truth <= high,
            "queried_dice": float(np.mean(dice_of(picks))),
            "redraw_coverage": float(np.mean([lo is not None and lo <= truth <= hi for _, lo, hi in redrawn]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--redraws", type=int, default=200)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-output" / "control-estimate")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(args.params, [*SMALL, *args.overrides])
    print(f"settings: {' '.join([*SMALL, *args.overrides])}; budget {cfg.query.budget_fraction:g} of the pool per "
          f"round, control_fraction {cfg.query.control_fraction:g}, strategy {cfg.query.strategy}")
    with tempfile.TemporaryDirectory() as folder:
        dataset = dataset_of(cfg, Path(folder))
        split = make_split(dataset.stems, cfg.data.split.train, cfg.data.split.val, cfg.data.seed)
        rows = [row for seed in args.seeds for row in
                campaign(cfg, dataset, split, seed, args.rounds, args.redraws, Path(folder) / f"seed-{seed}")]
    covered = sum(row["covered"] for row in rows)
    error = np.mean([abs(row["estimate"] - row["truth"]) for row in rows])
    print(f"interval covers the pool's mean Dice in {covered} of {len(rows)} rounds ({covered / len(rows):.0%}; "
          f"target at least 90 %); mean absolute error {error:.4f}; mean controls per round "
          f"{np.mean([row['controls'] for row in rows]):.1f}")
    print(f"over {args.redraws} fresh draws of the controls per round: coverage "
          f"{np.mean([row['redraw_coverage'] for row in rows]):.1%}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"settings": [*SMALL, *args.overrides], "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
