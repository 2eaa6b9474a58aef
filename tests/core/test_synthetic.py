"""Tests of the procedural histology-like data set in :mod:`activeseg.core.synthetic`."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from activeseg.core.config import ConfigError, load_config
from activeseg.core.synthetic import OBJECT_TYPES, STYLES, place_objects, synthesize


def _stems(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.png"))


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthesize(tmp_path_factory.mktemp("syn") / "data", n=8, size=48, seed=3)


def test_layout_and_count(dataset: Path) -> None:
    images, masks = _stems(dataset / "images"), _stems(dataset / "masks")
    assert images == [f"syn-{i:03d}" for i in range(8)]
    assert masks == images
    assert sorted(json.loads((dataset / "styles.json").read_text())) == images


def test_images_rgb_and_masks_binary_with_matching_sizes(dataset: Path) -> None:
    for stem in _stems(dataset / "images"):
        image, mask = _read(dataset / "images" / f"{stem}.png"), _read(dataset / "masks" / f"{stem}.png")
        assert image.shape == (48, 48, 3) and image.dtype == np.uint8
        assert mask.shape == (48, 48) and mask.dtype == np.uint8
        assert set(np.unique(mask).tolist()) <= {0, 255}


def test_foreground_fraction_is_sensible(dataset: Path) -> None:
    fractions = [(_read(p) > 0).mean() for p in sorted((dataset / "masks").glob("*.png"))]
    assert all(0.15 < f < 0.65 for f in fractions), fractions
    assert 0.25 <= np.mean(fractions) <= 0.5


def test_several_styles(dataset: Path) -> None:
    styles = json.loads((dataset / "styles.json").read_text())
    assert set(styles.values()) <= {s.name for s in STYLES}
    assert len(set(styles.values())) > 1


def test_objects_visible_in_image(dataset: Path) -> None:
    """Foreground and background pixels differ in colour on average in every image."""
    for stem in _stems(dataset / "images"):
        image = _read(dataset / "images" / f"{stem}.png").astype(float)
        mask = _read(dataset / "masks" / f"{stem}.png") > 0
        assert np.abs(image[mask].mean(0) - image[~mask].mean(0)).max() > 20


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_by_seed(tmp_path: Path) -> None:
    a = _files(synthesize(tmp_path / "a", n=4, size=32, seed=7))
    b = _files(synthesize(tmp_path / "b", n=4, size=32, seed=7))
    c = _files(synthesize(tmp_path / "c", n=4, size=32, seed=8))
    assert a == b
    assert a.keys() == c.keys()
    assert all(a[k] != c[k] for k in a if k.startswith("images"))


@pytest.mark.parametrize("classes", [3, 4])
def test_multiclass_values(tmp_path: Path, classes: int) -> None:
    out = synthesize(tmp_path, n=3, size=48, seed=1, classes=classes)
    values = set()
    for path in (out / "masks").glob("*.png"):
        mask = _read(path)
        assert mask.shape == (48, 48)
        values |= set(np.unique(mask).tolist())
    assert values <= set(range(classes))
    assert values == set(range(classes))


def test_two_and_three_classes_share_images(tmp_path: Path) -> None:
    two = synthesize(tmp_path / "two", n=2, size=32, seed=5, classes=2)
    three = synthesize(tmp_path / "three", n=2, size=32, seed=5, classes=3)
    for stem in _stems(two / "images"):
        assert (two / "images" / f"{stem}.png").read_bytes() == (three / "images" / f"{stem}.png").read_bytes()
        assert np.array_equal(_read(two / "masks" / f"{stem}.png") > 0, _read(three / "masks" / f"{stem}.png") > 0)


@pytest.mark.parametrize("kwargs", [{"n": 0}, {"size": 8}, {"classes": 1}])
def test_rejects_bad_arguments(tmp_path: Path, kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        synthesize(tmp_path, **kwargs)


def test_default_weights_make_one_style_and_one_object_type_rare(tmp_path: Path) -> None:
    """20 images: styles he 0.4 / ihc 0.3 / pale 0.2 / darkfield 0.1, objects round 0.6 / elongated 0.3
    / lobulated 0.1 give exactly these counts (shares of n), assigned in a seeded shuffle."""
    out = synthesize(tmp_path / "d", n=20, size=16, seed=2)
    styles = json.loads((out / "styles.json").read_text())
    objects = json.loads((out / "objects.json").read_text())
    assert Counter(styles.values()) == {"he": 8, "ihc": 6, "pale": 4, "darkfield": 2}
    assert Counter(objects.values()) == {"round": 12, "elongated": 6, "lobulated": 2}
    assert sorted(objects) == sorted(styles) == _stems(out / "images")


def test_weights_choose_what_is_drawn_and_a_positive_weight_appears_at_least_once(tmp_path: Path) -> None:
    out = synthesize(tmp_path / "w", n=5, size=16, seed=0, style_weights={"ihc": 1},
                     object_weights={"round": 100, "lobulated": 1})
    assert set(json.loads((out / "styles.json").read_text()).values()) == {"ihc"}
    assert Counter(json.loads((out / "objects.json").read_text()).values()) == {"round": 4, "lobulated": 1}


def _object_shapes(kind: str) -> tuple[float, float]:
    """Median minor/major axis ratio and median area (px) of the objects one he-style layout places."""
    style = OBJECT_TYPES[[t.name for t in OBJECT_TYPES].index(kind)].shape(STYLES[0])
    labels = place_objects(np.random.default_rng(0), style, 128, 1).labels
    ratios, areas = [], []
    for i in range(1, labels.max() + 1):
        ys, xs = np.nonzero(labels == i)
        if ys.size >= 20:
            low, high = np.linalg.eigvalsh(np.cov(np.stack([ys, xs])))
            ratios.append(np.sqrt(low / high))
            areas.append(ys.size)
    return float(np.median(ratios)), float(np.median(areas))


def test_object_types_reshape_the_objects() -> None:
    """Elongated objects are thin (axis ratio in the type's 0.25-0.45, round ones follow the style's
    0.6-1); lobulated ones are larger."""
    (round_ratio, round_area), (thin_ratio, _), (_, lobe_area) = (
        _object_shapes(kind) for kind in ("round", "elongated", "lobulated"))  # 0.71, 155 / 0.38 / 528
    assert thin_ratio < 0.5 < round_ratio, (thin_ratio, round_ratio)
    assert lobe_area > 1.5 * round_area, (lobe_area, round_area)


@pytest.mark.parametrize("weights, message", [
    ({"style_weights": {"he": 1, "sepia": 1}},
     "data.synthetic.style_weights: unknown name 'sepia' (valid: he, darkfield, ihc, pale)"),
    ({"object_weights": {"round": 0}},
     "data.synthetic.object_weights: weights must not be negative and one must be positive"),
])
def test_bad_weights_name_the_key(tmp_path: Path, weights: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        synthesize(tmp_path, n=2, size=16, **weights)
    assert str(err.value) == message
    with pytest.raises(ConfigError, match=r"^data\.synthetic\.object_weights: weights must not be negative"):
        load_config(None, ["data.synthetic.object_weights={round: -1, lobulated: 2}"])
