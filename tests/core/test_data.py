import json

import numpy as np
import pytest
from PIL import Image

from activeseg.core.data import DatasetError, load_dataset, load_or_create_split, make_split


def write_pair(root, stem, size=(16, 12), mask_value=255, image_mode="L", ext="png"):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    w, h = size
    img = np.full((h, w, 3) if image_mode == "RGB" else (h, w), 100, np.uint8)
    Image.fromarray(img).save(root / "images" / f"{stem}.{ext}")
    mask = np.zeros((h, w), np.uint8)
    mask[2:5, 3:7] = mask_value
    Image.fromarray(mask).save(root / "masks" / f"{stem}.png")


def test_loads_grey_images_and_binary_masks(tmp_path):
    write_pair(tmp_path, "a")
    write_pair(tmp_path, "b", size=(20, 10), ext="tif")
    ds = load_dataset(tmp_path)
    assert ds.stems == ["a", "b"]
    assert ds.image("a").shape == (12, 16, 1) and ds.image("b").shape == (10, 20, 1)
    assert ds.image("a").max() == pytest.approx(100 / 255)
    assert set(np.unique(ds.mask("a"))) == {0, 1} and ds.mask("a").sum() == 12


def test_unpaired_image_is_named(tmp_path):
    write_pair(tmp_path, "a")
    (tmp_path / "masks" / "a.png").unlink()
    with pytest.raises(DatasetError, match=r"images/a.png: no mask masks/a.png"):
        load_dataset(tmp_path)


def test_unpaired_mask_is_named(tmp_path):
    write_pair(tmp_path, "a")
    (tmp_path / "images" / "a.png").unlink()
    with pytest.raises(DatasetError, match=r"masks/a.png: mask without an image"):
        load_dataset(tmp_path)


def test_unreadable_file_is_named(tmp_path):
    write_pair(tmp_path, "a")
    (tmp_path / "images" / "a.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"images/a.png: unreadable image"):
        load_dataset(tmp_path)


def test_size_mismatch_is_named(tmp_path):
    write_pair(tmp_path, "a")
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "masks" / "a.png")
    with pytest.raises(DatasetError, match=r"masks/a.png: mask size 5 x 5 \(height x width\) differs from its "
                                           r"image's 12 x 16"):
        load_dataset(tmp_path)


def test_mask_values_outside_classes(tmp_path):
    write_pair(tmp_path, "a", mask_value=3)
    with pytest.raises(DatasetError, match=r"masks/a.png: mask values \[0, 3\] outside the classes 0..1"):
        load_dataset(tmp_path, classes=2)
    assert load_dataset(tmp_path, classes=4).mask("a").max() == 3


def test_mixed_channels_rejected(tmp_path):
    write_pair(tmp_path, "a")
    write_pair(tmp_path, "b", image_mode="RGB")
    with pytest.raises(DatasetError, match=r"images/b.png: 3 channels where others have 1"):
        load_dataset(tmp_path)


def test_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match="images: folder not found"):
        load_dataset(tmp_path)


def test_split_is_seeded_disjoint_and_complete():
    stems = [f"s{i}" for i in range(10)]
    split = make_split(stems, 0.6, 0.2, seed=3)
    assert [len(split[k]) for k in ("train", "val", "test")] == [6, 2, 2]
    assert sorted(sum(split.values(), [])) == sorted(stems)
    assert split == make_split(stems, 0.6, 0.2, seed=3)
    assert split != make_split(stems, 0.6, 0.2, seed=4)


def test_split_is_frozen_once_written(tmp_path):
    stems = [f"s{i}" for i in range(10)]
    path = tmp_path / "split.json"
    first = load_or_create_split(path, stems, 0.6, 0.2, seed=0)
    again = load_or_create_split(path, stems, 0.5, 0.25, seed=99)  # other params: the file wins
    assert again == first == json.loads(path.read_text())
    with pytest.raises(DatasetError, match="frozen split does not match"):
        load_or_create_split(path, stems + ["new"], 0.6, 0.2, seed=0)


def test_a_decompression_bomb_is_refused_before_decoding(tmp_path):
    from activeseg.core.data import read_image, read_mask
    from activeseg.core.errors import MAX_PIXELS
    from tests.conftest import bomb_png

    write_pair(tmp_path, "a")
    bomb = bomb_png(10_000, 10_000)  # 10^8 pixels in about 100 KB: over Pillow's 89.5 million, under twice that
    assert len(bomb) < 200_000 and 10_000 * 10_000 > MAX_PIXELS
    (tmp_path / "images" / "a.png").write_bytes(bomb)
    with pytest.raises(DatasetError, match=r"images/a.png: image declares 10000 x 10000 pixels \(height x width\), "
                                           r"over the limit of "
                                           rf"{MAX_PIXELS} \(a decompression bomb\?\); not decoded"):
        load_dataset(tmp_path)
    (tmp_path / "bomb.png").write_bytes(bomb)
    with pytest.raises(DatasetError, match=r"bomb.png: mask declares 10000 x 10000 pixels"):
        read_mask(tmp_path / "bomb.png", 2)
    # far over the limit Pillow refuses to open it at all: still a DatasetError naming the file
    (tmp_path / "huge.png").write_bytes(bomb_png(20_000, 20_000))
    with pytest.raises(DatasetError, match=r"huge.png: unreadable image \(.*decompression bomb"):
        read_image(tmp_path / "huge.png")


def test_a_palette_mask_gives_its_indices_and_a_16_bit_mask_its_values(tmp_path):
    from activeseg.core.data import read_mask

    ids = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    palette = Image.fromarray(ids, mode="P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)  # class 1 red, class 2 green
    palette.save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    assert read_mask(tmp_path / "p.png", 3).tolist() == ids.tolist()  # the indices, not the colours
    with pytest.raises(DatasetError, match=r"p.png: mask values \[0, 1, 2\] outside the classes 0..1"):
        read_mask(tmp_path / "p.png", 2)
    Image.fromarray(ids.astype(np.uint16)).save(tmp_path / "i16.png")
    assert Image.open(tmp_path / "i16.png").mode == "I;16"
    mask = read_mask(tmp_path / "i16.png", 3)
    assert mask.dtype == np.uint8 and mask.tolist() == ids.tolist()
    Image.fromarray(np.array([[0, 255]], np.uint16)).save(tmp_path / "binary16.png")
    assert read_mask(tmp_path / "binary16.png", 2).tolist() == [[0, 1]]
    Image.fromarray(np.array([[0, 65535]], np.uint16)).save(tmp_path / "full16.png")  # not a class id
    with pytest.raises(DatasetError, match=r"full16.png: mask values \[0, 65535\] outside the classes 0..1"):
        read_mask(tmp_path / "full16.png", 2)
