"""Markdown tables from the ``benchmark.json`` files of ``run_strategy_benchmarks.sh``.

    .venv/bin/python benchmarks/report.py bench-output/synthetic bench-output/isbi-patch ...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from activeseg.loop.benchmark import FRACTIONS


def fmt(value: float | None, pct: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f} %" if pct else f"{value:.3f}"


def table(report: dict) -> str:
    head = ["strategy", "AUC Dice (mean +- std)", *(f"Dice @ {int(f * 100)} %" for f in FRACTIONS),
            "last round: pixels / Dice", "pixels to 95 % of full"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = sorted(report["comparison"].items(), key=lambda kv: -kv[1]["auc_dice_mean"])
    for name, r in rows:
        cells = [f"**{name}**" if name in ("random", "full") else name,
                 f"{r['auc_dice_mean']:.3f} +- {r['auc_dice_std']:.3f}",
                 *(fmt(r[f"dice_at_{int(f * 100)}pct"]) for f in FRACTIONS),
                 f"{fmt(r['final_fraction'], pct=True)} / {fmt(r['final_dice_mean'])}",
                 fmt(r["fraction_to_95pct_full"], pct=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    for folder in map(Path, sys.argv[1:]):
        report = json.loads((folder / "benchmark.json").read_text())
        print(f"### {folder.name}\n")
        print(f"{report['granularity']} granularity, seeds {report['seeds']}, {report['rounds']} rounds, "
              f"wall time {report['wall_seconds'] / 60:.1f} min on {report['machine']}\n")
        print(table(report) + "\n")


if __name__ == "__main__":
    main()
