"""Strategy comparison over a simulated campaign (issue 3's benchmark).

Per strategy, from ``simulate``'s records: AUC of Dice over rounds (mean +- population std over seeds),
Dice at fixed revealed-pixel fractions, and the revealed fraction needed to reach 95 % of the ``full``
Dice. Dice at a fraction is read off the seed-averaged learning curve by linear interpolation between
rounds; a fraction outside the range a strategy reached is reported as ``None`` (not extrapolated).
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np

from activeseg.core.config import Config
from activeseg.loop.curves import curves
from activeseg.loop.simulate import simulate

FRACTIONS = (0.05, 0.10, 0.25, 0.50)
REFERENCES = ("random", "full")


def dice_at(fraction: np.ndarray, dice: np.ndarray, target: float) -> float | None:
    """Dice of a (fraction, dice) curve at ``target`` by linear interpolation; None outside its range."""
    if len(fraction) == 0 or target < fraction[0] - 1e-9 or target > fraction[-1] + 1e-9:
        return None
    return float(np.interp(target, fraction, dice))


def fraction_to_reach(fraction: np.ndarray, dice: np.ndarray, level: float) -> float | None:
    """The first revealed fraction at which the curve reaches ``level`` (interpolated); None if never."""
    for i, d in enumerate(dice):
        if d >= level:
            if i == 0:
                return float(fraction[0])
            f0, f1, d0, d1 = fraction[i - 1], fraction[i], dice[i - 1], d
            return float(f0 + (level - d0) * (f1 - f0) / (d1 - d0))
    return None


def compare(results: dict) -> dict[str, dict]:
    """The comparison table from ``simulate``'s results, one row per strategy."""
    mean_curves = curves(results["runs"])
    full = results["summary"].get("full", {}).get("final_dice_mean")
    table = {}
    for name, summary in results["summary"].items():
        c = mean_curves[name]
        row = {"auc_dice_mean": summary["auc_dice_mean"], "auc_dice_std": summary["auc_dice_std"],
               "final_dice_mean": summary["final_dice_mean"],
               "final_fraction": float(c["fraction"][-1])}
        for f in FRACTIONS:
            row[f"dice_at_{int(f * 100)}pct"] = dice_at(c["fraction"], c["dice"], f)
        row["fraction_to_95pct_full"] = fraction_to_reach(c["fraction"], c["dice"], 0.95 * full) if full else None
        table[name] = row
    return table


def run_benchmark(cfg: Config, dataset: Path, strategies: list[str], seeds: list[int], out: Path,
                  rounds: int | None = None, progress: bool = True) -> dict:
    """Simulate the strategies plus the references ``random`` and ``full``; writes ``benchmark.json``."""
    names = list(dict.fromkeys(list(strategies) + list(REFERENCES)))
    start = time.perf_counter()
    results = simulate(cfg, dataset, names, seeds, out, rounds=rounds, progress=progress)
    report = {"dataset": str(dataset), "granularity": cfg.partition.granularity, "seeds": seeds,
              "rounds": rounds or cfg.rounds, "wall_seconds": time.perf_counter() - start,
              "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
              "comparison": compare(results)}
    (Path(out) / "benchmark.json").write_text(json.dumps(report, indent=1))
    return report
