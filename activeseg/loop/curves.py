"""Learning curves: Dice against the revealed-pixel fraction, the mean over seeds with a confidence band.

The band is the mean +- the 95 % t interval over seeds at each round (``protocol.mean_ci``); with a
single seed it has no width (the interval is undefined) and only the mean is drawn. The plot clips
the band to [0, 1], the range of Dice (a t interval over few seeds can leave it).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from activeseg.loop.protocol import mean_ci


def curves(runs: list[dict]) -> dict[str, dict[str, np.ndarray]]:
    """Per strategy, arrays of shape (R,) over its R rounds: mean fraction, mean Dice, and the band
    ``low`` / ``high`` (mean -+ the 95 % t half-width of the Dice over seeds; the mean with one seed)."""
    grouped: dict[str, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        grouped[r["strategy"]][r["round"]].append(r)
    out = {}
    for strategy, rounds in grouped.items():
        keys = sorted(rounds)
        cis = [mean_ci(np.array([x["dice"] for x in rounds[k]])) for k in keys]
        half = np.array([ci["half_width"] or 0.0 for ci in cis])
        dice = np.array([ci["mean"] for ci in cis])
        out[strategy] = {
            "fraction": np.array([np.mean([x["labeled_pixel_fraction"] for x in rounds[k]]) for k in keys]),
            "dice": dice, "low": dice - half, "high": dice + half,
        }
    return out


def plot_learning_curves(runs: list[dict], path: Path, title: str = "Active learning") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    all_curves = sorted(curves(runs).items())
    many = len(all_curves) > 5  # distinct colours past the default ten, fainter bands, random in black
    colours = iter(plt.get_cmap("tab20").colors if many else plt.rcParams["axes.prop_cycle"].by_key()["color"])
    fig, ax = plt.subplots(figsize=(9, 4.5) if many else (7, 4.5))
    for strategy, c in all_curves:
        if len(c["fraction"]) == 1:  # a single point, e.g. ``full``: a reference line
            ax.axhline(c["dice"][0], ls="--", color="black", lw=1, label=f"{strategy} (reference)")
            continue
        colour = "black" if many and strategy == "random" else next(colours)
        ax.plot(c["fraction"] * 100, c["dice"], marker="o", ms=3, label=strategy, color=colour,
                lw=2 if strategy == "random" else 1.3)
        ax.fill_between(c["fraction"] * 100, np.clip(c["low"], 0, 1), np.clip(c["high"], 0, 1),
                        color=colour, alpha=0.06 if many else 0.2)
    ax.set_xlabel("revealed training pixels (%)")
    several_seeds = len({r["seed"] for r in runs}) > 1
    ax.set_ylabel("test Dice (mean, band: 95 % CI over seeds)" if several_seeds else "test Dice")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5)) if many else ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
