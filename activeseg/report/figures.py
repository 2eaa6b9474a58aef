"""The report's pictures as PNG bytes: the learning curve and the control checks (matplotlib), and one
thumbnail per queried region (four panels side by side, drawn with numpy and Pillow: fast, and
pixel-exact at small sizes).

Thumbnail panels, each the region's context crop enlarged to about ``PANEL`` pixels with the region
outlined in yellow: the image; the uncertainty of the model that asked (predictive entropy, scaled from
0 to ln C, colour map ``magma`` without its pale end); its prediction over the image (the argmax of the
MC-dropout mean, as its query saw it); and, once labeled, the annotator's mask over the image with the
pixels where it differs from the model's prediction in red (inside the region only: only there is the
truth known). That prediction is the pre-annotation exported to the annotator's tool where the round
exported one (so a mask handed back unchanged shows no red), else the query's
(:meth:`RegionView.compared_prediction`). A panel without data (no maps stored, labels not in yet) is grey.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING

import numpy as np

from activeseg.loop.curves import curves
from activeseg.report.campaign import RegionView
from activeseg.workspace.exchange.images import outlined, png_bytes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PANEL = 120
"""The long side of a thumbnail panel, in pixels (at least: crops are enlarged by whole factors)."""
GAP = 4
CLASS_COLOURS = np.array([(0, 0, 0), (0, 200, 255), (255, 140, 0), (120, 255, 80), (255, 80, 200),
                          (160, 120, 255), (255, 255, 255)], np.float32)
"""Overlay colour of class ids 1, 2, ... (row 0, the background, is never drawn); repeated past the end."""
DISAGREE = np.array((255, 0, 0), np.float32)
EMPTY = 96
HEAT_TOP = 0.85
DICE_MARGIN = 0.05
"""The least room (in Dice) left above and below the data on the learning curve's fitted axis."""


def dice_limits(values: list[float]) -> tuple[float, float]:
    """The learning curve's Dice axis fitted to every drawn value: their range widened by a tenth of it,
    at least ``DICE_MARGIN``, on each side, within [0, 1]; (0, 1) with nothing drawn."""
    if not values:
        return 0.0, 1.0
    low, high = min(values), max(values)
    margin = max(0.1 * (high - low), DICE_MARGIN)
    return max(0.0, low - margin), min(1.0, high + margin)


def figure_png(fig: Figure) -> bytes:
    """A figure as PNG bytes at 100 dpi (a 7 x 3.6 inch figure: 700 x 360 pixels)."""
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=100)
    return out.getvalue()


def learning_curve_png(curve: list[tuple[int, float, float]], strategy: str, reference: list[dict]) -> bytes:
    """The learning curve (:func:`learning_curve_figure`) as PNG bytes, 700 x 360 pixels."""
    return figure_png(learning_curve_figure(curve, strategy, reference))


def control_png(rows: list[dict]) -> bytes:
    """The control checks (:func:`control_figure`) as PNG bytes, 700 x 320 pixels."""
    return figure_png(control_figure(rows))


def control_figure(rows: list[dict]) -> Figure:
    """Per round with a control check (``rows``: :func:`activeseg.workspace.audit.control_estimates`): the
    estimate of the model's Dice on the unlabeled pool, the controls' mean Dice, with its 95 % interval as
    an error bar (none with a single control), and beside it the model's Dice on the strategy's picks, both
    of the model that queried, before it trained on them. A strategy that finds what the model gets wrong
    keeps the second below the first. The Dice axis is fitted to everything drawn (:func:`dice_limits`)."""
    from matplotlib import figure

    fig = figure.Figure(figsize=(7, 3.2))
    ax = fig.subplots()
    rounds = np.array([row["round"] for row in rows])
    estimate = np.array([row["control_dice"] for row in rows])
    low = np.array([row["control_dice"] if row["low"] is None else row["low"] for row in rows])
    high = np.array([row["control_dice"] if row["high"] is None else row["high"] for row in rows])
    ax.errorbar(rounds, estimate, yerr=[estimate - low, high - estimate], fmt="o-", capsize=4, color="tab:green",
                label="on the controls: the pool estimate (95 % interval)")
    queried = [(row["round"], row["queried_dice"]) for row in rows if row["queried_dice"] is not None]
    if queried:
        ax.plot(*zip(*queried), "s--", color="tab:red", label="on the queried regions")
    ax.set_xticks(rounds)
    ax.set_xlabel("round (its model, before it trained on the round's labels)")
    ax.set_ylabel("mean Dice per region")
    ax.set_ylim(*dice_limits([*low, *high, *(d for _, d in queried)]))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def learning_curve_figure(curve: list[tuple[int, float, float]], strategy: str, reference: list[dict]) -> Figure:
    """Test Dice against the labeled-pixel fraction of the campaign's rounds (``curve``: (round, fraction,
    Dice), each point marked with its round; round 1's model trained on the initial set, round 0's
    labels); with ``reference`` (a simulation's runs) its ``random`` curve from its round 0 (mean over
    seeds, band: the 95 % t interval, as :mod:`activeseg.loop.curves` computes it) for comparison. The
    Dice axis is fitted to everything drawn (:func:`dice_limits`)."""
    from matplotlib import figure  # no pyplot: nothing to close, no backend to pick

    fig = figure.Figure(figsize=(7, 3.6))
    ax = fig.subplots()
    drawn: list[float] = []
    random = curves([r for r in reference if r["strategy"] == "random"]).get("random")
    if random is not None:
        low, high = np.clip(random["low"], 0, 1), np.clip(random["high"], 0, 1)
        ax.plot(random["fraction"] * 100, random["dice"], color="grey", ls="--", marker=".",
                label="random (simulation)")
        ax.fill_between(random["fraction"] * 100, low, high, color="grey", alpha=0.2)
        drawn += [*random["dice"], *low, *high]
    if curve:
        _, fraction, dice = zip(*curve)
        ax.plot(np.array(fraction) * 100, dice, marker="o", color="tab:blue", lw=2,
                label=f"this campaign ({strategy}), points numbered by round")
        for n, x, y in curve:
            ax.annotate(str(n), (x * 100, y), textcoords="offset points", xytext=(0, 7), ha="center",
                        fontsize=8, color="tab:blue")
        drawn += dice
    ax.set_xlabel("labeled training pixels (%)")
    ax.set_ylabel("test Dice")
    ax.set_ylim(*dice_limits(drawn))
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # nothing to name before the first round closes
        ax.legend(fontsize=8, loc="best")  # the fitted axis leaves no corner free for sure
    fig.tight_layout()
    return fig


def overlay(image: np.ndarray, classes: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """(h, w, 3) uint8 image with each pixel of class id > 0 in ``classes`` (h, w) blended with its colour."""
    colours = CLASS_COLOURS[np.clip(classes, 0, len(CLASS_COLOURS) - 1)]
    out = image.astype(np.float32)
    fg = classes > 0
    out[fg] = (1 - alpha) * out[fg] + alpha * colours[fg]
    return np.round(out).astype(np.uint8)


def heat(uncertainty: np.ndarray, classes: int) -> np.ndarray:
    """(h, w) entropy -> (h, w, 3) uint8 through ``magma``, 0 to ln(classes) (the largest entropy) onto the
    map's first ``HEAT_TOP`` (its pale yellow end would hide the yellow outline)."""
    from matplotlib import colormaps

    scaled = np.clip(uncertainty.astype(np.float32) / math.log(classes), 0, 1)
    return (colormaps["magma"](scaled * HEAT_TOP)[:, :, :3] * 255).astype(np.uint8)


def label_panel(view: RegionView) -> np.ndarray | None:
    """The annotator's mask over the crop (inside the region) with the pixels where the compared
    prediction (:meth:`RegionView.compared_prediction`) differs from it in red, or None."""
    if view.label is None:
        return None
    y0, x0, y1, x1 = view.inner
    panel = view.image.copy()
    panel[y0:y1, x0:x1] = overlay(view.image[y0:y1, x0:x1], view.label)
    prediction = view.compared_prediction()
    if prediction is not None:
        panel[y0:y1, x0:x1][prediction != view.label] = DISAGREE.astype(np.uint8)
    return panel


def panels(view: RegionView, classes: int) -> list[np.ndarray | None]:
    """The four (h, w, 3) panels of a thumbnail (None: no data for it)."""
    return [view.image,
            heat(view.uncertainty, classes) if view.uncertainty is not None else None,
            overlay(view.image, view.prediction) if view.prediction is not None else None,
            label_panel(view)]


def thumbnail_png(view: RegionView, classes: int) -> bytes:
    """The region's four panels side by side (see the module docstring), as one PNG."""
    h, w = view.image.shape[:2]
    scale = max(1, math.ceil(PANEL / max(h, w)))
    drawn = [outlined(p if p is not None else np.full((h, w, 3), EMPTY, np.uint8), view.inner, scale)
             for p in panels(view, classes)]
    sheet = np.full((h * scale, len(drawn) * (w * scale + GAP) - GAP, 3), 255, np.uint8)
    for i, panel in enumerate(drawn):
        sheet[:, i * (w * scale + GAP): i * (w * scale + GAP) + w * scale] = panel
    return png_bytes(sheet, compress_level=1)  # half the time of the default level; every report redraws them all

