"""Tests for activeseg.metrics on small masks whose values are worked out by hand in the comments."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from activeseg.metrics import (
    auc_dice,
    binary_metrics,
    contour,
    dice,
    evaluate_folders,
    hd95,
    mean_metrics,
    msd,
    per_class_metrics,
    voe,
)

SQRT2 = math.sqrt(2.0)


def _mask(shape: tuple[int, int], *pixels: tuple[int, int]) -> np.ndarray:
    m = np.zeros(shape, dtype=np.uint8)
    for r, c in pixels:
        m[r, c] = 1
    return m


def _square(shape: tuple[int, int], top: int, left: int, side: int = 2) -> np.ndarray:
    m = np.zeros(shape, dtype=np.uint8)
    m[top : top + side, left : left + side] = 1
    return m


# ---------------------------------------------------------------------------------------------
# binary metrics
# ---------------------------------------------------------------------------------------------


def test_identical_masks() -> None:
    # 4x4 square inside an 8x8 image: full overlap, every contour pixel lies on the other contour.
    m = _square((8, 8), 2, 2, side=4)
    assert binary_metrics(m, m) == {"dice": 1.0, "voe": 0.0, "msd": 0.0, "hd95": 0.0}


def test_foreground_is_value_above_zero() -> None:
    # 255-valued prediction and 1-valued ground truth describe the same mask.
    gt = _square((6, 6), 1, 1, side=3)
    assert binary_metrics(gt * 255, gt) == {"dice": 1.0, "voe": 0.0, "msd": 0.0, "hd95": 0.0}


def test_disjoint_squares() -> None:
    # P = rows 1-2, cols 1-2; G = rows 1-2, cols 5-6 in a 4x8 image. No overlap: Dice 0, VOE 1.
    # A 2x2 square is all contour (its 3x3 erosion is empty).
    # P -> G: col 1 pixels are 4 from col 5, col 2 pixels are 3  -> [3, 3, 4, 4], sum 14.
    # G -> P: col 5 pixels are 3 from col 2, col 6 pixels are 4  -> [3, 3, 4, 4], sum 14.
    # MSD = 28 / 8 = 3.5. P95 of [3, 3, 4, 4]: rank 0.95 * 3 = 2.85, between 4 and 4 -> 4.
    pred, gt = _square((4, 8), 1, 1), _square((4, 8), 1, 5)
    assert dice(pred, gt) == 0.0
    assert voe(pred, gt) == 1.0
    assert msd(pred, gt) == pytest.approx(3.5)
    assert hd95(pred, gt) == pytest.approx(4.0)


def test_square_vs_diagonally_shifted_square() -> None:
    # P = rows 1-2, cols 1-2; G = rows 2-3, cols 2-3 in a 6x6 image. Overlap = {(2, 2)}.
    # Dice = 2 * 1 / (4 + 4) = 0.25; IoU = 1 / 7, VOE = 6 / 7.
    # Both are all contour. P -> G: (1,1)->(2,2) = sqrt2, (1,2)->(2,2) = 1, (2,1)->(2,2) = 1,
    # (2,2) -> 0, so [0, 1, 1, sqrt2], sum 2 + sqrt2; G -> P is the mirror image, same values.
    # MSD = 2 (2 + sqrt2) / 8 = (2 + sqrt2) / 4 ~ 0.853553.
    # P95 of [0, 1, 1, sqrt2]: rank 2.85 -> 1 + 0.85 (sqrt2 - 1) ~ 1.352082, both directions.
    pred, gt = _square((6, 6), 1, 1), _square((6, 6), 2, 2)
    result = binary_metrics(pred, gt)
    assert result["dice"] == pytest.approx(0.25)
    assert result["voe"] == pytest.approx(6 / 7)
    assert result["msd"] == pytest.approx((2 + SQRT2) / 4)
    assert result["hd95"] == pytest.approx(1 + 0.85 * (SQRT2 - 1))
    assert msd(pred, gt) == result["msd"] and hd95(pred, gt) == result["hd95"]


def test_square_vs_horizontally_shifted_square() -> None:
    # P = rows 1-2, cols 1-2; G = rows 1-2, cols 2-3. Overlap 2: Dice = 4 / 8 = 0.5, VOE = 1 - 2/6.
    # P -> G: [1, 1, 0, 0]; G -> P: [0, 0, 1, 1]. MSD = 4 / 8 = 0.5; P95 of [0, 0, 1, 1] = 1.
    result = binary_metrics(_square((6, 6), 1, 1), _square((6, 6), 1, 2))
    assert result == pytest.approx({"dice": 0.5, "voe": 2 / 3, "msd": 0.5, "hd95": 1.0})


def test_metrics_are_symmetric() -> None:
    pred, gt = _square((6, 6), 1, 1, side=3), _square((6, 6), 2, 2)
    assert binary_metrics(pred, gt) == pytest.approx(binary_metrics(gt, pred))


# ---------------------------------------------------------------------------------------------
# contour and the image border
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mask, centre",
    [
        # A 3x3 square away from the border keeps only its centre after a 3x3 erosion.
        (_square((5, 5), 1, 1, side=3), (2, 2)),
        # The whole 3x3 image is foreground. With the border treated as background only the centre
        # survives erosion, so the 8 border pixels are contour (were the border foreground, the
        # contour would be empty).
        (np.ones((3, 3), dtype=np.uint8), (1, 1)),
        # 3x3 block in the top-left corner of a 4x4 image: row 0 and col 0 pixels are contour.
        (_square((4, 4), 0, 0, side=3), (1, 1)),
    ],
    ids=["interior", "whole-image", "touching-border"],
)
def test_contour_is_the_mask_less_its_eroded_centre(mask: np.ndarray, centre: tuple[int, int]) -> None:
    expected = mask.astype(bool).copy()
    expected[centre] = False
    np.testing.assert_array_equal(contour(mask), expected)


def test_msd_with_mask_covering_the_whole_image() -> None:
    # P = the whole 3x3 image (contour: the 8-pixel ring), G = the centre pixel (contour: itself).
    # Dice = 2 * 1 / (9 + 1) = 0.2; VOE = 1 - 1/9 = 8/9.
    # P -> G: 4 edge neighbours at 1, 4 corners at sqrt2 -> sum 4 + 4 sqrt2; G -> P: 1.
    # MSD = (4 + 4 sqrt2 + 1) / (8 + 1) = (5 + 4 sqrt2) / 9 ~ 1.184094.
    # P95(P -> G) of [1,1,1,1,s,s,s,s]: rank 0.95 * 7 = 6.65, between sqrt2 and sqrt2 -> sqrt2;
    # P95(G -> P) = 1. HD95 = sqrt2.
    pred = np.ones((3, 3), dtype=np.uint8)
    gt = _mask((3, 3), (1, 1))
    result = binary_metrics(pred, gt)
    assert result["dice"] == pytest.approx(0.2)
    assert result["voe"] == pytest.approx(8 / 9)
    assert result["msd"] == pytest.approx((5 + 4 * SQRT2) / 9)
    assert result["hd95"] == pytest.approx(SQRT2)


# ---------------------------------------------------------------------------------------------
# empty masks and bad input
# ---------------------------------------------------------------------------------------------


def test_both_empty() -> None:
    empty = np.zeros((4, 4), dtype=np.uint8)
    assert binary_metrics(empty, empty) == {"dice": 1.0, "voe": 0.0, "msd": 0.0, "hd95": 0.0}


@pytest.mark.parametrize("empty_side", ["pred", "gt"])
def test_one_empty(empty_side: str) -> None:
    empty, square = np.zeros((4, 4), dtype=np.uint8), _square((4, 4), 1, 1)
    pred, gt = (empty, square) if empty_side == "pred" else (square, empty)
    assert binary_metrics(pred, gt) == {"dice": 0.0, "voe": 1.0, "msd": None, "hd95": None}
    assert msd(pred, gt) is None and hd95(pred, gt) is None


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        dice(np.zeros((3, 3)), np.zeros((3, 4)))


def test_non_2d_raises() -> None:
    with pytest.raises(ValueError, match="2-D"):
        binary_metrics(np.zeros((2, 3, 3)), np.zeros((2, 3, 3)))


# ---------------------------------------------------------------------------------------------
# multi-class
# ---------------------------------------------------------------------------------------------

MC_PRED = np.array([[1, 1, 2, 2], [1, 1, 2, 0]], dtype=np.uint8)
MC_GT = np.array([[1, 1, 2, 2], [1, 1, 2, 2]], dtype=np.uint8)


def test_per_class_metrics() -> None:
    # Class 1: identical 2x2 blocks -> Dice 1, VOE 0, MSD 0, HD95 0.
    # Class 2: P = {(0,2), (0,3), (1,2)}, G = P + {(1,3)}. Dice = 2*3 / 7 = 6/7; VOE = 1 - 3/4.
    # Every pixel is contour (all on the border). P -> G: [0, 0, 0]; G -> P: [0, 0, 0, 1].
    # MSD = 1 / 7. HD95 = max(0, P95 of [0, 0, 0, 1] = 0 + 0.85 * 1) = 0.85.
    # Class 3: absent from both -> the both-empty values.
    result = per_class_metrics(MC_PRED, MC_GT, classes=4)
    assert set(result) == {1, 2, 3}
    assert result[1] == {"dice": 1.0, "voe": 0.0, "msd": 0.0, "hd95": 0.0}
    assert result[2] == pytest.approx({"dice": 6 / 7, "voe": 0.25, "msd": 1 / 7, "hd95": 0.85})
    assert result[3] == {"dice": 1.0, "voe": 0.0, "msd": 0.0, "hd95": 0.0}


def test_per_class_metrics_needs_a_foreground_class() -> None:
    with pytest.raises(ValueError, match="classes"):
        per_class_metrics(MC_PRED, MC_GT, classes=1)


# ---------------------------------------------------------------------------------------------
# aggregation and AUC
# ---------------------------------------------------------------------------------------------


def test_mean_metrics_skips_none_and_counts() -> None:
    # dice (1 + 0 + 0.5 + 0.5) / 4 = 0.5; voe (0 + 1 + 0.5 + 0.5) / 4 = 0.5;
    # msd over the two non-None values (0 + 2) / 2 = 1, two skipped; hd95 (0 + 3) / 2 = 1.5.
    per_image = {
        "a": {"dice": 1.0, "voe": 0.0, "msd": 0.0, "hd95": 0.0},
        "b": {"dice": 0.0, "voe": 1.0, "msd": None, "hd95": None},
        "c": {"dice": 0.5, "voe": 0.5, "msd": 2.0, "hd95": 3.0},
        "d": {"dice": 0.5, "voe": 0.5, "msd": None, "hd95": None},
    }
    assert mean_metrics(per_image) == pytest.approx(
        {"dice": 0.5, "voe": 0.5, "msd": 1.0, "hd95": 1.5, "msd_skipped": 2, "hd95_skipped": 2}
    )


def test_mean_metrics_reports_zero_skipped() -> None:
    per_image = {"a": {"dice": 1.0, "voe": 0.0, "msd": 0.0, "hd95": 0.0}}
    result = mean_metrics(per_image)
    assert result["msd_skipped"] == 0 and result["hd95_skipped"] == 0


def test_mean_metrics_all_none() -> None:
    per_image = {
        "a": {"dice": 0.0, "voe": 1.0, "msd": None, "hd95": None},
        "b": {"dice": 0.0, "voe": 1.0, "msd": None, "hd95": None},
    }
    result = mean_metrics(per_image)
    assert result["msd"] is None and result["hd95"] is None
    assert result["msd_skipped"] == 2 and result["hd95_skipped"] == 2
    assert result["dice"] == 0.0


def test_auc_dice() -> None:
    # Trapezoids: (0.5 + 0.7)/2 = 0.6 and (0.7 + 0.9)/2 = 0.8; area 1.4 over 2 intervals -> 0.7.
    assert auc_dice([0.5, 0.7, 0.9]) == pytest.approx(0.7)


def test_auc_dice_single_round_and_constant() -> None:
    assert auc_dice([0.42]) == pytest.approx(0.42)
    assert auc_dice([0.8, 0.8, 0.8, 0.8]) == pytest.approx(0.8)


def test_auc_dice_empty_raises() -> None:
    with pytest.raises(ValueError):
        auc_dice([])


# ---------------------------------------------------------------------------------------------
# folders of PNG masks
# ---------------------------------------------------------------------------------------------


def _save(folder: Path, stem: str, array: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(folder / f"{stem}.png")


def test_evaluate_folders_binary(tmp_path: Path) -> None:
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    # "same": identical; "shift": the diagonally shifted square of test_square_vs_diagonally_shifted_square
    # (saved as 0/255); "miss": empty prediction -> msd/hd95 None.
    _save(pred_dir, "same", _square((6, 6), 1, 1))
    _save(gt_dir, "same", _square((6, 6), 1, 1))
    _save(pred_dir, "shift", _square((6, 6), 1, 1) * 255)
    _save(gt_dir, "shift", _square((6, 6), 2, 2) * 255)
    _save(pred_dir, "miss", np.zeros((6, 6)))
    _save(gt_dir, "miss", _square((6, 6), 2, 2))

    result = evaluate_folders(pred_dir, gt_dir)
    assert set(result) == {"per_image", "mean"}
    assert set(result["per_image"]) == {"same", "shift", "miss"}
    assert result["per_image"]["miss"] == {"dice": 0.0, "voe": 1.0, "msd": None, "hd95": None}
    assert result["per_image"]["shift"]["dice"] == pytest.approx(0.25)
    mean = result["mean"]
    # dice (1 + 0.25 + 0) / 3; msd ((2 + sqrt2)/4 + 0) / 2, one skipped.
    assert mean["dice"] == pytest.approx(1.25 / 3)
    assert mean["msd"] == pytest.approx((2 + SQRT2) / 8)
    assert mean["msd_skipped"] == 1 and mean["hd95_skipped"] == 1
    json.dumps(result)  # JSON-serialisable


def test_evaluate_folders_multiclass(tmp_path: Path) -> None:
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    _save(pred_dir, "img", MC_PRED)
    _save(gt_dir, "img", MC_GT)
    result = evaluate_folders(pred_dir, gt_dir, classes=3)
    assert set(result) == {"per_image", "mean", "per_class", "mean_per_class"}
    assert set(result["per_class"]["img"]) == {"1", "2"}
    assert result["per_class"]["img"]["2"] == pytest.approx({"dice": 6 / 7, "voe": 0.25, "msd": 1 / 7, "hd95": 0.85})
    assert result["mean_per_class"]["1"]["dice"] == 1.0
    assert result["mean_per_class"]["2"]["msd_skipped"] == 0
    # Binary view: foreground = label > 0, P misses (1, 3) only. Dice = 2*7 / 15.
    assert result["per_image"]["img"]["dice"] == pytest.approx(14 / 15)
    json.dumps(result)


def test_evaluate_folders_missing_prediction(tmp_path: Path) -> None:
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    _save(pred_dir, "a", _square((4, 4), 1, 1))
    _save(gt_dir, "a", _square((4, 4), 1, 1))
    _save(gt_dir, "lonely", _square((4, 4), 1, 1))
    with pytest.raises(ValueError, match="lonely"):
        evaluate_folders(pred_dir, gt_dir)


def test_evaluate_folders_missing_ground_truth(tmp_path: Path) -> None:
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    _save(pred_dir, "extra", _square((4, 4), 1, 1))
    gt_dir.mkdir()
    with pytest.raises(ValueError, match="extra"):
        evaluate_folders(pred_dir, gt_dir)


def test_evaluate_folders_size_mismatch(tmp_path: Path) -> None:
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    _save(pred_dir, "big", _square((5, 5), 1, 1))
    _save(gt_dir, "big", _square((4, 4), 1, 1))
    with pytest.raises(ValueError, match=r"size mismatch for big\.png"):
        evaluate_folders(pred_dir, gt_dir)
