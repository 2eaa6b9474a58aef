"""Learning-curve plot: Dice against the revealed-pixel fraction, mean and spread over seeds."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np


def curves(runs: list[dict]) -> dict[str, dict[str, np.ndarray]]:
    """Per strategy, per round: mean fraction, mean Dice, min and max Dice over seeds."""
    grouped: dict[str, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        grouped[r["strategy"]][r["round"]].append(r)
    out = {}
    for strategy, rounds in grouped.items():
        keys = sorted(rounds)
        dices = [[x["dice"] for x in rounds[k]] for k in keys]
        out[strategy] = {
            "fraction": np.array([np.mean([x["labeled_pixel_fraction"] for x in rounds[k]]) for k in keys]),
            "dice": np.array([np.mean(d) for d in dices]),
            "low": np.array([np.min(d) for d in dices]),
            "high": np.array([np.max(d) for d in dices]),
        }
    return out


def plot_learning_curves(runs: list[dict], path: Path, title: str = "Active learning") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for strategy, c in sorted(curves(runs).items()):
        if len(c["fraction"]) == 1:  # a single point, e.g. ``full``: a reference line
            ax.axhline(c["dice"][0], ls="--", color="black", lw=1, label=f"{strategy} (reference)")
            continue
        (line,) = ax.plot(c["fraction"] * 100, c["dice"], marker="o", ms=3, label=strategy)
        ax.fill_between(c["fraction"] * 100, c["low"], c["high"], color=line.get_color(), alpha=0.2)
    ax.set_xlabel("revealed training pixels (%)")
    ax.set_ylabel("test Dice")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
