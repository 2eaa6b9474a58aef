"""Segmentation metrics: Dice, VOE, MSD, HD95, and the AUC of Dice over active-learning rounds.

All masks are 2-D NumPy arrays of shape ``(H, W)``. For the binary metrics a pixel is foreground
when its value is ``> 0``; for the multi-class metrics class ``c`` is the set of pixels equal to
``c``. Distances are Euclidean, in pixels.

Equations (P = predicted foreground, G = ground-truth foreground, |.| = pixel count):

* Dice = 2 |P ∩ G| / (|P| + |G|)
* VOE  = 1 - |P ∩ G| / |P ∪ G|   (volumetric overlap error, 1 - IoU)
* Contour (BSQ paper, Eq. 11): ∂M = M minus its erosion by a 3x3 square, with the image border
  treated as background, so foreground pixels on the border are contour pixels.
* d(x, ∂B) = min over y in ∂B of ||x - y||   (from a Euclidean distance transform)
* MSD  = (Σ_{x∈∂P} d(x, ∂G) + Σ_{y∈∂G} d(y, ∂P)) / (|∂P| + |∂G|)   (BSQ paper, Eq. 11)
* HD95 = max(P95{d(x, ∂G) : x∈∂P}, P95{d(y, ∂P) : y∈∂G})   (``np.percentile``, linear)
* AUC of Dice over rounds r = 0..R-1 (Belharbi et al.): trapezoid rule with unit spacing,
  divided by R - 1.

Empty masks: both empty gives Dice 1, VOE 0, MSD 0, HD95 0; exactly one empty gives Dice 0,
VOE 1, and MSD / HD95 ``None`` (undefined). :func:`mean_metrics` skips ``None`` values and
reports how many it skipped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from activeseg.core.data import first_unpaired

METRICS: tuple[str, ...] = ("dice", "voe", "msd", "hd95")
"""Keys of :func:`binary_metrics`, in order."""

NULLABLE: tuple[str, ...] = ("msd", "hd95")
"""Metrics that are ``None`` when exactly one mask is empty; their skip counts are always reported."""

_STRUCTURE = np.ones((3, 3), dtype=bool)


# --------------------------------------------------------------------------------------------
# Binary masks
# --------------------------------------------------------------------------------------------


def _as_binary_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Check that ``pred`` and ``gt`` are 2-D of the same shape ``(H, W)``; return ``(pred > 0, gt > 0)``."""
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.ndim != 2 or gt.ndim != 2:
        raise ValueError(f"expected 2-D masks (H, W), got shapes {pred.shape} and {gt.shape}")
    if pred.shape != gt.shape:
        raise ValueError(f"mask shapes differ: pred {pred.shape} vs gt {gt.shape}")
    return pred > 0, gt > 0


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice = 2 |P ∩ G| / (|P| + |G|), in [0, 1]; 1 when both masks are empty.

    ``pred`` and ``gt`` have shape ``(H, W)``; foreground is ``> 0``.
    """
    p, g = _as_binary_pair(pred, gt)
    total = int(p.sum()) + int(g.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(p, g).sum()) / total


def voe(pred: np.ndarray, gt: np.ndarray) -> float:
    """Volumetric overlap error VOE = 1 - |P ∩ G| / |P ∪ G| (= 1 - IoU), in [0, 1]; 0 when both are empty.

    ``pred`` and ``gt`` have shape ``(H, W)``; foreground is ``> 0``.
    """
    p, g = _as_binary_pair(pred, gt)
    union = int(np.logical_or(p, g).sum())
    if union == 0:
        return 0.0
    return 1.0 - int(np.logical_and(p, g).sum()) / union


def contour(mask: np.ndarray) -> np.ndarray:
    """Contour of a binary mask (BSQ paper, Eq. 11): the mask minus its 3x3 erosion.

    The image border counts as background: the mask is zero-padded by one pixel before eroding,
    so foreground pixels on the border of the image are contour pixels.

    ``mask`` has shape ``(H, W)`` (foreground ``> 0``); returns a bool array of shape ``(H, W)``.
    """
    from scipy import ndimage  # scipy only where a metric is computed (the workspace imports this module)

    m = np.asarray(mask) > 0
    padded = np.pad(m, 1, mode="constant", constant_values=False)
    eroded = ndimage.binary_erosion(padded, structure=_STRUCTURE, border_value=0)[1:-1, 1:-1]
    return m & ~eroded


def _distances_to(target: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Euclidean distance from each ``True`` pixel of ``points`` to the nearest ``True`` pixel of ``target``.

    Both are bool arrays of shape ``(H, W)``, ``target`` non-empty; returns shape ``(points.sum(),)``.
    Uses the distance transform of the complement of ``target``: O(H W), not O(|points| |target|).
    """
    from scipy import ndimage

    return ndimage.distance_transform_edt(~target)[points]


def surface_distances(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Directed contour-to-contour distances ``(d(∂P → ∂G), d(∂G → ∂P))``.

    ``pred`` and ``gt`` have shape ``(H, W)``. Returns two 1-D arrays of lengths ``|∂P|`` and
    ``|∂G|``, or ``None`` when exactly one mask is empty (the distances are undefined). When both
    are empty, returns two empty arrays.
    """
    p, g = _as_binary_pair(pred, gt)
    cp, cg = contour(p), contour(g)
    has_p, has_g = bool(cp.any()), bool(cg.any())
    if not has_p and not has_g:
        return np.zeros(0), np.zeros(0)
    if has_p != has_g:
        return None
    return _distances_to(cg, cp), _distances_to(cp, cg)


def _msd_from(distances: tuple[np.ndarray, np.ndarray] | None) -> float | None:
    """MSD (Eq. 11) from the output of :func:`surface_distances`."""
    if distances is None:
        return None
    d_pg, d_gp = distances
    n = d_pg.size + d_gp.size
    if n == 0:
        return 0.0
    return float((d_pg.sum() + d_gp.sum()) / n)


def _hd95_from(distances: tuple[np.ndarray, np.ndarray] | None) -> float | None:
    """HD95 from the output of :func:`surface_distances`."""
    if distances is None:
        return None
    d_pg, d_gp = distances
    if d_pg.size == 0 and d_gp.size == 0:
        return 0.0
    return float(max(np.percentile(d_pg, 95), np.percentile(d_gp, 95)))


def msd(pred: np.ndarray, gt: np.ndarray) -> float | None:
    """Mean symmetric surface distance (BSQ paper, Eq. 11), in pixels.

    MSD = (Σ_{x∈∂P} d(x, ∂G) + Σ_{y∈∂G} d(y, ∂P)) / (|∂P| + |∂G|), with ∂ the contour of
    :func:`contour`. ``pred`` and ``gt`` have shape ``(H, W)``. 0 when both masks are empty,
    ``None`` when exactly one is.
    """
    return _msd_from(surface_distances(pred, gt))


def hd95(pred: np.ndarray, gt: np.ndarray) -> float | None:
    """95th-percentile Hausdorff distance, in pixels.

    HD95 = max(P95{d(x, ∂G) : x∈∂P}, P95{d(y, ∂P) : y∈∂G}), percentiles by ``np.percentile``
    with linear interpolation. ``pred`` and ``gt`` have shape ``(H, W)``. 0 when both masks are
    empty, ``None`` when exactly one is.
    """
    return _hd95_from(surface_distances(pred, gt))


def binary_metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, float | None]:
    """All binary metrics ``{"dice", "voe", "msd", "hd95"}`` for masks of shape ``(H, W)`` (foreground ``> 0``).

    The contour distances are computed once and shared by MSD and HD95.
    """
    distances = surface_distances(pred, gt)
    return {
        "dice": dice(pred, gt),
        "voe": voe(pred, gt),
        "msd": _msd_from(distances),
        "hd95": _hd95_from(distances),
    }


# --------------------------------------------------------------------------------------------
# Multi-class masks, aggregation, AUC
# --------------------------------------------------------------------------------------------


def per_class_metrics(pred: np.ndarray, gt: np.ndarray, classes: int) -> dict[int, dict[str, float | None]]:
    """Binary metrics for each foreground class ``c`` in ``1 .. classes-1`` (masks ``pred == c``, ``gt == c``).

    ``pred`` and ``gt`` are integer label maps of shape ``(H, W)``; class 0 is background.
    """
    if classes < 2:
        raise ValueError(f"classes must be >= 2 (background + at least one class), got {classes}")
    pred, gt = np.asarray(pred), np.asarray(gt)
    _as_binary_pair(pred, gt)  # shape checks
    return {c: binary_metrics(pred == c, gt == c) for c in range(1, classes)}


def mean_metrics(per_image: Mapping[str, Mapping[str, float | None]]) -> dict[str, float | int | None]:
    """Mean of each metric over images, skipping ``None`` values.

    ``per_image`` maps an image id to a metric dict (as from :func:`binary_metrics`). For each
    metric the result holds the mean of its non-``None`` values (``None`` if there are none), and
    ``"<metric>_skipped"``: the number of ``None`` values skipped. The skip counts of MSD and HD95
    are always present (0 when nothing was skipped); those of other metrics only when non-zero.
    """
    keys: list[str] = []
    for metrics in per_image.values():
        keys.extend(k for k in metrics if k not in keys)
    if not keys:
        keys = list(METRICS)
    result: dict[str, float | int | None] = {}
    for key in keys:
        values = [m[key] for m in per_image.values() if key in m]
        present = [float(v) for v in values if v is not None]
        skipped = len(values) - len(present)
        result[key] = float(np.mean(present)) if present else None
        if skipped or key in NULLABLE:
            result[f"{key}_skipped"] = skipped
    for key in NULLABLE:
        result.setdefault(f"{key}_skipped", 0)
    return result


def auc_dice(dices: Sequence[float]) -> float:
    """Normalised area under the Dice-vs-round curve (Belharbi et al.).

    AUC = (1 / (R - 1)) Σ_{r=0}^{R-2} (D_r + D_{r+1}) / 2 for R rounds (trapezoid rule, unit
    spacing), so a constant Dice D gives AUC = D. With one round, returns that round's Dice.
    """
    values = np.asarray(dices, dtype=float)
    if values.ndim != 1 or values.size == 0:
        raise ValueError("auc_dice needs a non-empty sequence of Dice values")
    if values.size == 1:
        return float(values[0])
    return float(np.trapezoid(values, dx=1.0) / (values.size - 1))


# --------------------------------------------------------------------------------------------
# Folders of PNG masks
# --------------------------------------------------------------------------------------------


def _png_stems(folder: Path) -> dict[str, Path]:
    """Map stem -> path for every ``*.png`` in ``folder``."""
    if not folder.is_dir():
        raise FileNotFoundError(f"mask folder not found: {folder}")
    return {p.stem: p for p in sorted(folder.glob("*.png"))}


def _read_mask(path: Path) -> np.ndarray:
    """Read a PNG mask as an array of shape ``(H, W)``; multi-channel images need equal channels."""
    with Image.open(path) as image:
        array = np.asarray(image)
    if array.ndim == 3:
        if not (array == array[..., :1]).all():
            raise ValueError(f"{path}: expected a single-channel mask, got {array.shape[2]} differing channels")
        array = array[..., 0]
    return array


def _matched_pairs(pred_dir: Path, gt_dir: Path) -> dict[str, tuple[Path, Path]]:
    """Pair ``<stem>.png`` files of both folders; a stem on one side only raises ``ValueError``."""
    preds, gts = _png_stems(pred_dir), _png_stems(gt_dir)
    orphan = first_unpaired(gts, preds)
    if orphan:
        stem, path, is_gt = orphan
        raise ValueError(f"no prediction for {stem}.png: {path} has no match in {pred_dir}" if is_gt
                         else f"no ground truth for {stem}.png: {path} has no match in {gt_dir}")
    if not gts:
        raise ValueError(f"no .png masks found in {gt_dir} and {pred_dir}")
    return {stem: (preds[stem], gts[stem]) for stem in sorted(gts)}


def evaluate_folders(pred_dir: str | Path, gt_dir: str | Path, classes: int | None = None) -> dict[str, Any]:
    """Evaluate predicted masks against ground truth, matched by ``<stem>.png``.

    Returns ``{"per_image": {stem: binary_metrics}, "mean": mean_metrics}`` on foreground ``> 0``;
    with ``classes`` also ``"per_class": {stem: {str(c): metrics}}`` and
    ``"mean_per_class": {str(c): mean_metrics}`` for ``c`` in ``1 .. classes-1``. Values are
    plain floats / ints / ``None`` (JSON-serialisable). A stem present in one folder only, or a
    size mismatch, raises ``ValueError`` naming the file.
    """
    pairs = _matched_pairs(Path(pred_dir), Path(gt_dir))
    per_image: dict[str, dict[str, float | None]] = {}
    per_class: dict[str, dict[str, dict[str, float | None]]] = {}
    for stem, (pred_path, gt_path) in pairs.items():
        pred, gt = _read_mask(pred_path), _read_mask(gt_path)
        if pred.shape != gt.shape:
            raise ValueError(f"size mismatch for {stem}.png: {pred_path} is {pred.shape}, {gt_path} is {gt.shape}")
        per_image[stem] = binary_metrics(pred, gt)
        if classes is not None:
            per_class[stem] = {str(c): m for c, m in per_class_metrics(pred, gt, classes).items()}
    result: dict[str, Any] = {"per_image": per_image, "mean": mean_metrics(per_image)}
    if classes is not None:
        result["per_class"] = per_class
        result["mean_per_class"] = {
            str(c): mean_metrics({stem: per_class[stem][str(c)] for stem in per_class}) for c in range(1, classes)
        }
    return result
