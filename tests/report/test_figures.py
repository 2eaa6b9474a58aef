"""The report's pictures on hand-checked arrays: overlays, the disagreement panel (against the exported
pre-annotation when there is one), the heat map, the thumbnail's layout; and the learning curve: its Dice
axis fitted to what it draws, and as a PNG."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from matplotlib import colormaps
from PIL import Image

from activeseg.report.campaign import RegionView
from activeseg.report.figures import (HEAT_TOP, dice_limits, heat, label_panel, learning_curve_figure,
                                      learning_curve_png, overlay, thumbnail_png)


def view(label: np.ndarray | None, prediction: np.ndarray | None, size: tuple[int, int] = (4, 4)) -> RegionView:
    """A grey (100) crop of ``size`` with the region at rows and columns 1 to 2."""
    return RegionView(round=1, id="syn-000_y0000_x0000_2x2", score=0.5, cost=4,
                      image=np.full((*size, 3), 100, np.uint8), inner=(1, 1, 3, 3),
                      uncertainty=np.zeros(size, np.float16) if prediction is not None else None,
                      prediction=prediction, label=label)


def test_overlay_blends_the_class_colour_over_foreground_only() -> None:
    image = np.zeros((2, 2, 3), np.uint8)
    out = overlay(image, np.array([[0, 1], [0, 0]], np.uint8))
    assert out[0, 1].tolist() == [0, 100, 128]  # half of (0, 200, 255), rounded half to even
    assert out[0, 0].tolist() == out[1, 0].tolist() == out[1, 1].tolist() == [0, 0, 0]


def test_the_label_panel_marks_where_the_model_was_wrong_inside_the_region() -> None:
    prediction = np.zeros((4, 4), np.uint8)
    prediction[0, 0] = 1  # outside the region: the truth is not known there
    panel = label_panel(view(np.array([[1, 0], [0, 0]], np.uint8), prediction))
    assert panel[1, 1].tolist() == [255, 0, 0]  # labeled 1, predicted 0
    assert panel[1, 2].tolist() == panel[2, 2].tolist() == [100, 100, 100]  # both 0
    assert panel[0, 0].tolist() == [100, 100, 100]
    assert int((panel == [255, 0, 0]).all(axis=2).sum()) == 1
    # without the model's prediction only the mask is drawn; without labels there is no panel
    drawn = label_panel(view(np.array([[1, 0], [0, 0]], np.uint8), None))
    assert drawn[1, 1].tolist() == [50, 150, 178]
    assert label_panel(view(None, prediction)) is None


def test_the_label_panel_compares_with_the_exported_pre_annotation_when_there_is_one() -> None:
    prediction = np.zeros((4, 4), np.uint8)  # the query's: wrong at (1, 1)
    exported = view(np.array([[1, 0], [0, 0]], np.uint8), prediction)
    exported.pre_annotation = np.array([[1, 0], [0, 1]], np.uint8)  # right at (1, 1), wrong at (2, 2)
    panel = label_panel(exported)
    assert [(y, x) for y, x in zip(*np.nonzero((panel == [255, 0, 0]).all(axis=2)))] == [(2, 2)]
    exported.pre_annotation = exported.label.copy()  # handed back unchanged: nothing in red
    assert not (label_panel(exported) == [255, 0, 0]).all(axis=2).any()


def test_the_heat_map_spans_zero_to_the_largest_entropy() -> None:
    rgb = heat(np.array([[0.0, math.log(3)], [2.0, math.log(3) / 2]]), classes=3)
    expected = lambda v: (np.array(colormaps["magma"](v)[:3]) * 255).astype(np.uint8).tolist()  # noqa: E731
    assert rgb[0, 0].tolist() == expected(0.0)
    assert rgb[0, 1].tolist() == rgb[1, 0].tolist() == expected(HEAT_TOP)  # above ln C: clipped
    assert rgb[1, 1].tolist() == expected(HEAT_TOP / 2)


def test_a_thumbnail_is_four_enlarged_panels_side_by_side() -> None:
    png = thumbnail_png(view(np.zeros((2, 2), np.uint8), np.zeros((10, 12), np.uint8), size=(10, 12)), classes=2)
    image = np.asarray(Image.open(io.BytesIO(png)))
    assert image.shape == (100, 4 * 120 + 3 * 4, 3)  # scale ceil(120 / 12) = 10
    assert image[:, 120:124].tolist() == np.full((100, 4, 3), 255).tolist()  # the gap
    assert image[10, 10].tolist() == [255, 255, 0]  # the region's outline, top left corner at (1, 1) x 10


def test_panels_without_data_are_grey() -> None:
    png = thumbnail_png(view(None, None), classes=2)
    image = np.asarray(Image.open(io.BytesIO(png)))
    width = 30 * 4  # scale ceil(120 / 4) = 30
    for panel in (1, 2, 3):
        assert image[5, panel * (width + 4) + 5].tolist() == [96, 96, 96]
    assert image[5, 5].tolist() == [100, 100, 100]


def test_the_dice_axis_is_fitted_to_the_values_drawn() -> None:
    assert dice_limits([]) == (0.0, 1.0)
    assert dice_limits([0.7]) == pytest.approx((0.65, 0.75))  # at least 0.05 on each side
    assert dice_limits([0.2, 0.8]) == pytest.approx((0.14, 0.86))  # a tenth of the range
    assert dice_limits([0.02, 0.98]) == pytest.approx((0.0, 1.0))  # never past [0, 1]


def test_the_learning_curve_fits_its_axis_to_the_campaign_and_the_reference_from_round_0() -> None:
    campaign = [(1, 0.1, 0.72), (2, 0.2, 0.8)]
    assert learning_curve_figure(campaign, "entropy", []).axes[0].get_ylim() == pytest.approx((0.67, 0.85))
    reference = [{"strategy": "random", "round": k, "seed": 0, "dice": dice, "labeled_pixel_fraction": 0.1 * (k + 1)}
                 for k, dice in enumerate((0.3, 0.6, 0.7))]  # one seed: no band
    axes = learning_curve_figure(campaign, "entropy", reference).axes[0]
    assert axes.get_ylim() == pytest.approx((0.25, 0.85))  # down to the reference's round 0 at 0.3
    assert [t.get_text() for t in axes.texts] == ["1", "2"]  # the campaign's points, numbered by round


def test_the_learning_curve_is_a_png() -> None:
    png = learning_curve_png([(1, 0.1, 0.5), (2, 0.2, 0.7)], "suggestive",
                             [{"strategy": "random", "round": k, "seed": s, "dice": 0.4 + 0.1 * k,
                               "labeled_pixel_fraction": 0.1 * (k + 1)} for k in range(2) for s in range(2)])
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG" and image.size == (700, 360)
