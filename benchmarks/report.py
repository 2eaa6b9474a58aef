"""The tables of docs/benchmarks.md from the output folders of ``run_strategy_benchmarks.sh``.

    .venv/bin/python benchmarks/report.py bench-output/synthetic bench-output/isbi-patch

With more than one folder, the AUC differences to ``random`` and ``random_fg`` pooled over the folders'
(dataset, seed) pairs follow (issue 22).

Per folder: the comparison table of ``activeseg benchmark`` (``benchmark.json``), the training cost per
round (labeled pixels, optimisation steps, stop epoch, seconds; mean over strategies and seeds), and
the check that ``full`` is at least as good as every AL run's last round.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from activeseg.loop.benchmark import COLUMNS, fmt_ci, pooled_differences, table_rows


def comparison(report: dict) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(f"**{c}**" if i == 0 and c in ("random", "full") else c
                                for i, c in enumerate(row)) + " |" for row in table_rows(report)]
    return "\n".join(lines)


def cost_per_round(runs: list[dict]) -> str:
    """Mean labeled fraction, steps, stop epoch and seconds per round over the AL runs, then `full`."""
    rows: dict[str, list[dict]] = defaultdict(list)
    for r in runs:
        rows["full" if r["strategy"] == "full" else f"round {r['round']}"].append(r)
    lines = ["| round | runs | labeled pixels | train steps | stop epoch | train seconds |", "|---|---|---|---|---|---|"]
    for name, group in sorted(rows.items(), key=lambda kv: (kv[0] == "full", kv[0])):
        mean = {k: statistics.fmean(r[k] for r in group)
                for k in ("labeled_pixel_fraction", "train_steps", "stop_epoch", "train_seconds")}
        lines.append(f"| {name} | {len(group)} | {100 * mean['labeled_pixel_fraction']:.1f} % | "
                     f"{mean['train_steps']:.0f} | {mean['stop_epoch']:.1f} | {mean['train_seconds']:.1f} |")
    return "\n".join(lines)


def full_check(runs: list[dict]) -> str:
    """How many AL runs end above `full`'s mean Dice (the converged upper bound should be above all)."""
    full = statistics.fmean(r["dice"] for r in runs if r["strategy"] == "full")
    last: dict[tuple[str, int], dict] = {}
    for r in runs:
        if r["strategy"] != "full" and r["round"] >= last.get((r["strategy"], r["seed"]), {"round": -1})["round"]:
            last[(r["strategy"], r["seed"])] = r
    above = sorted((r["dice"], s, seed) for (s, seed), r in last.items() if r["dice"] > full)
    where = "; ".join(f"{s} seed {seed}: {d:.3f}" for d, s, seed in above[-5:])
    return (f"`full` mean test Dice {full:.3f}; AL runs whose last round is above it: {len(above)} of "
            f"{len(last)}" + (f" (highest: {where})" if above else ""))


def pooled(runs_by_dataset: dict[str, list[dict]]) -> str:
    """The pooled paired comparison to each baseline that ran on every dataset, as a markdown table."""
    lines = []
    for reference in ("random", "random_fg"):
        if not all(any(r["strategy"] == reference for r in runs) for runs in runs_by_dataset.values()):
            continue
        lines += [f"Pooled over {', '.join(runs_by_dataset)} against `{reference}`:", "",
                  "| strategy | pairs | diff (mean +- 95% CI) | p (Wilcoxon) |", "|---|---|---|---|"]
        for name, d in pooled_differences(runs_by_dataset, reference).items():
            lines.append(f"| {name} | {len(d['seeds'])} | {fmt_ci(d, signed=True)} | {d['p']:.4f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    runs_by_dataset = {}
    for folder in map(Path, sys.argv[1:]):
        report = json.loads((folder / "benchmark.json").read_text())
        runs = json.loads((folder / "results.json").read_text())["runs"]
        runs_by_dataset[folder.name] = runs
        print(f"### {folder.name}\n")
        print(f"{report['granularity']} granularity, seeds {report['seeds']}, {report['rounds']} rounds, "
              f"wall time of the comparison pass {report['wall_seconds'] / 60:.1f} min on {report['machine']}\n")
        for warning in report["protocol"]["warnings"]:
            print(f"- warning: {warning}")
        print(comparison(report) + "\n")
        print("Training cost per round (mean over strategies and seeds):\n")
        print(cost_per_round(runs) + "\n")
        print(full_check(runs) + "\n")
    if len(runs_by_dataset) > 1:
        print(pooled(runs_by_dataset))


if __name__ == "__main__":
    main()
