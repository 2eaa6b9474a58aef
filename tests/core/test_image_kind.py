"""The kind of images a dataset holds, for train.augment.preset auto (activeseg.core.image_kind)."""

import numpy as np
from PIL import Image

from activeseg.core.data import load_dataset
from activeseg.core.image_kind import Detected, detect_preset, image_kind, kind_of


def test_grey_bright_rgb_and_dark_rgb_images():
    assert image_kind(np.full((4, 4, 1), 0.9, np.float32)) == "em"
    assert image_kind(np.full((4, 4, 3), 0.3, np.float32)) == "em"  # grey stored as RGB
    pink = np.zeros((4, 4, 3), np.float32) + [0.9, 0.6, 0.8]  # median brightness 0.77
    assert image_kind(pink) == "histology"
    dark = np.zeros((4, 4, 3), np.float32)
    dark[0, 0] = [0.1, 0.9, 0.1]  # one green spot on black: median brightness 0
    assert image_kind(dark) == "fluorescence"


def test_the_kind_of_80_percent_of_the_images_else_none():
    assert kind_of(["histology"] * 4 + ["fluorescence"]) == Detected("histology", "auto: 4 of 5 images look histology")
    assert kind_of(["histology"] * 3 + ["fluorescence"] * 2).preset == "none"


def test_a_grey_dataset_is_em(tmp_path):
    (tmp_path / "images").mkdir(), (tmp_path / "masks").mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(tmp_path / "images" / f"g{i}.png")
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "masks" / f"g{i}.png")
    assert detect_preset(load_dataset(tmp_path)) == Detected("em", "auto: 3 of 3 images look em")
