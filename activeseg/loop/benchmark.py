"""Strategy comparison over a simulated campaign (issue 3's benchmark, issue 9's protocol).

Every strategy runs with the references ``random`` and ``full`` on the same seeds (6 by default:
``DEFAULT_SEEDS``, the fewest with which a two-sided Wilcoxon p can fall below 0.05). Per strategy,
from ``simulate``'s records:

- AUC of Dice over rounds: mean +- population std (as ``summary``) and mean with its 95 % t interval;
- the paired difference of that AUC to ``random``, seed by seed: mean, 95 % t interval, Wilcoxon p
  (``protocol``); and to the foreground-aware ``random_fg`` when it ran (issue 22: a fair baseline);
- Dice at fixed revealed-pixel fractions, read off the seed-averaged learning curve by linear
  interpolation between rounds; ``None`` outside the range a strategy reached (not extrapolated);
- the revealed fraction at which the seed-averaged curve reaches 95 % and 98 % of ``full``'s mean Dice
  (None: not reached) and the saving against random, 1 - strategy / random.

Model selection uses the validation split only (``train_model`` keeps the epoch with the best val
Dice) and strategies see the train and val splits only; the test split is read by ``evaluate_model``
alone, for the reported numbers. ``run_benchmark`` checks that the split keeps test apart.

Training regimes (issue 21) are compared in :mod:`activeseg.loop.regimes`.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from activeseg.core.config import Config
from activeseg.core.util import read_json, write_json
from activeseg.loop.curves import curves
from activeseg.loop.protocol import (CONFIDENCE, auc_by_seed, fraction_to_reach, mean_ci, paired_difference,
                                     saving, smallest_p)
from activeseg.loop.simulate import simulate

FRACTIONS = (0.05, 0.10, 0.25, 0.50)
LEVELS = (0.95, 0.98)
REFERENCES = ("random", "full")
DEFAULT_SEEDS = 6
COLUMNS = ("strategy", "AUC Dice (mean +- 95% CI)", "diff to random (mean +- 95% CI)", "p (Wilcoxon)",
           "diff to random_fg", "p vs random_fg",
           *(f"pixels to {int(level * 100)}% of full" for level in LEVELS),
           *(f"saving vs random at {int(level * 100)}%" for level in LEVELS))


def default_seeds(first: int) -> list[int]:
    """The benchmark's seeds when none are given: ``DEFAULT_SEEDS`` consecutive seeds from ``first``."""
    return list(range(first, first + DEFAULT_SEEDS))


def dice_at(fraction: np.ndarray, dice: np.ndarray, target: float) -> float | None:
    """Dice of a (fraction, dice) curve, both (R,), at ``target`` by linear interpolation; None outside it."""
    if len(fraction) == 0 or target < fraction[0] - 1e-9 or target > fraction[-1] + 1e-9:
        return None
    return float(np.interp(target, fraction, dice))


def level_key(level: float) -> str:
    return f"{int(round(level * 100))}pct"


def fractions_to_full(curve: dict, full: float | None) -> dict[str, float | None]:
    """Per level of :data:`LEVELS`, ``fraction_to_<level>_full``: the revealed fraction at which the
    seed-averaged ``curve`` (``fraction``, ``dice``) reaches that share of ``full``'s Dice (None without one)."""
    return {f"fraction_to_{level_key(level)}_full": (fraction_to_reach(curve["fraction"], curve["dice"], level * full)
                                                     if full else None) for level in LEVELS}


def add_savings(table: dict[str, dict], reference: Callable[[str], str | None]) -> None:
    """``saving_<level>`` of every row: against the row ``reference(name)`` names (None: no saving)."""
    for name, row in table.items():
        other = reference(name)
        for level in LEVELS:
            key = f"fraction_to_{level_key(level)}_full"
            row[f"saving_{level_key(level)}"] = saving(row[key], table[other][key]) if other else None


def compare(results: dict) -> dict[str, dict]:
    """The comparison table from ``simulate``'s results, one row per strategy."""
    runs = results["runs"]
    mean_curves = curves(runs)
    full = results["summary"].get("full", {}).get("final_dice_mean")
    random_auc = auc_by_seed(runs, "random") if "random" in results["summary"] else None
    random_fg_auc = auc_by_seed(runs, "random_fg") if "random_fg" in results["summary"] else None
    table = {}
    for name, summary in results["summary"].items():
        c = mean_curves[name]
        auc = auc_by_seed(runs, name)
        row = {"auc_dice_mean": summary["auc_dice_mean"], "auc_dice_std": summary["auc_dice_std"],
               "auc_dice_ci": mean_ci(np.array(list(auc.values()))),
               "diff_to_random": (paired_difference(auc, random_auc)
                                  if random_auc and name not in REFERENCES else None),
               "diff_to_random_fg": (paired_difference(auc, random_fg_auc)
                                     if random_fg_auc and name not in (*REFERENCES, "random_fg") else None),
               "final_dice_mean": summary["final_dice_mean"], "final_fraction": float(c["fraction"][-1])}
        for f in FRACTIONS:
            row[f"dice_at_{int(f * 100)}pct"] = dice_at(c["fraction"], c["dice"], f)
        table[name] = {**row, **fractions_to_full(c, full)}
    add_savings(table, lambda name: "random" if "random" in table and name not in REFERENCES else None)
    return table


def pooled_differences(runs_by_dataset: dict[str, list[dict]], reference: str) -> dict[str, dict]:
    """Per strategy run on every dataset, its AUC difference to ``reference`` paired by (dataset, seed) and
    pooled over the datasets (issue 22: a Wilcoxon over seeds pooled across datasets): mean, 95 % t interval,
    Wilcoxon p and the pairs used. ``runs_by_dataset``: dataset name -> ``simulate``'s run records."""
    def aucs(strategy: str) -> dict[tuple[str, int], float]:
        return {(name, seed): auc for name, runs in runs_by_dataset.items()
                for seed, auc in auc_by_seed(runs, strategy).items()}

    everywhere = set.intersection(*({r["strategy"] for r in runs} for runs in runs_by_dataset.values()))
    base = aucs(reference)
    return {name: paired_difference(aucs(name), base)
            for name in sorted(everywhere - {reference, "full"})}


def check_split(path: Path) -> dict[str, int]:
    """The sizes of the frozen split at ``path``; a ValueError naming the file if test shares an image
    with train or val (the test split must only be read for the reported numbers)."""
    split = read_json(path)
    shared = set(split["test"]) & (set(split["train"]) | set(split["val"]))
    if shared:
        raise ValueError(f"{path}: the test split shares images with train/val: {sorted(shared)}")
    return {part: len(split[part]) for part in ("train", "val", "test")}


def protocol(results: dict, seeds: list[int], split_sizes: dict[str, int]) -> dict:
    """How the comparison was made: seeds, statistics, which split chose what, and warnings."""
    warnings = []
    if len(seeds) < 2:
        warnings.append("one seed: no confidence interval")
    if smallest_p(len(seeds)) >= 0.05:
        warnings.append(f"{len(seeds)} seeds: the Wilcoxon p cannot be below {smallest_p(len(seeds)):.4f}, "
                        "so no difference can reach p < 0.05 (6 seeds or more needed)")
    return {"seeds": seeds, "reference": "random", "confidence": CONFIDENCE,
            "interval": "two-sided t interval over seeds (sample std, ddof=1)",
            "test": "two-sided Wilcoxon signed-rank on the per-seed AUC differences to random "
                    "(scipy.stats.wilcoxon, zero differences dropped; all zero: p = 1)",
            "smallest_possible_p": smallest_p(len(seeds)), "levels_of_full": list(LEVELS),
            "full_dice": results["summary"].get("full", {}).get("final_dice_mean"),
            "model_selection": "validation split: each round keeps the epoch with the best val Dice",
            "reported_on": "test split, read only to evaluate each round's kept model",
            "split": split_sizes, "warnings": warnings}


def fmt_ci(ci: dict | None, signed: bool = False) -> str:
    if ci is None:
        return "-"
    mean = f"{ci['mean']:+.3f}" if signed else f"{ci['mean']:.3f}"
    return mean if ci["half_width"] is None else f"{mean} +- {ci['half_width']:.3f}"


def fmt_pct(value: float | None, missing: str) -> str:
    return missing if value is None else f"{100 * value:.1f} %"


def table_rows(report: dict) -> list[tuple[str, ...]]:
    """The rows of ``COLUMNS``, best AUC first: what the CLI prints and ``benchmark.md`` holds."""
    rows = []
    for name, r in sorted(report["comparison"].items(), key=lambda kv: -kv[1]["auc_dice_mean"]):
        diff, diff_fg = r["diff_to_random"], r.get("diff_to_random_fg")
        rows.append((name, fmt_ci(r["auc_dice_ci"]), fmt_ci(diff, signed=True),
                     "-" if diff is None else f"{diff['p']:.4f}", fmt_ci(diff_fg, signed=True),
                     "-" if diff_fg is None else f"{diff_fg['p']:.4f}",
                     *(fmt_pct(r[f"fraction_to_{level_key(level)}_full"], "not reached") for level in LEVELS),
                     *(fmt_pct(r[f"saving_{level_key(level)}"], "-") for level in LEVELS)))
    return rows


def markdown(report: dict) -> str:
    """``benchmark.md``: the run, the protocol and the comparison table."""
    p = report["protocol"]
    full = "-" if p["full_dice"] is None else f"{p['full_dice']:.3f}"
    lines = [f"# Benchmark: {report['dataset']}", "",
             f"{report['granularity']} granularity, seeds {report['seeds']}, {report['rounds']} rounds, "
             f"wall time {report['wall_seconds'] / 60:.1f} min on {report['machine']}.", "",
             f"- split: {' / '.join(f'{n} {part}' for part, n in p['split'].items())} images; "
             f"model selection: {p['model_selection']}; "
             f"reported on the {p['reported_on']}",
             f"- AUC of Dice per seed; {p['interval']}, confidence {p['confidence']}; {p['test']}",
             f"- `full` Dice (mean over seeds): {full}; pixels to x % of full: first revealed fraction at "
             "which the seed-averaged curve reaches x % of it (interpolated; not extrapolated); "
             "saving = 1 - strategy / random",
             *(f"- warning: {w}" for w in p["warnings"]), "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS),
             *("| " + " | ".join(row) + " |" for row in table_rows(report))]
    return "\n".join(lines) + "\n"


def run_benchmark(cfg: Config, dataset: Path, strategies: list[str], seeds: list[int] | None, out: Path,
                  rounds: int | None = None, progress: bool = True) -> dict:
    """Simulate the strategies plus the references ``random`` and ``full`` on ``seeds`` (default:
    ``default_seeds(cfg.train.seed)``); adds ``protocol`` and ``comparison`` to ``results.json`` and
    writes ``benchmark.json`` and ``benchmark.md``."""
    seeds = default_seeds(cfg.train.seed) if seeds is None else seeds
    names = list(dict.fromkeys(list(strategies) + list(REFERENCES)))
    out = Path(out)
    start = time.perf_counter()
    results = simulate(cfg, dataset, names, seeds, out, rounds=rounds, progress=progress)
    results["protocol"] = protocol(results, seeds, check_split(out / "split.json"))
    results["comparison"] = compare(results)
    write_json(out / "results.json", results)
    report = {"dataset": str(dataset), "granularity": cfg.partition.granularity, "seeds": seeds,
              "rounds": rounds or cfg.rounds, "wall_seconds": time.perf_counter() - start,
              "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
              "protocol": results["protocol"], "comparison": results["comparison"]}
    write_json(out / "benchmark.json", report)
    (out / "benchmark.md").write_text(markdown(report))
    return report
