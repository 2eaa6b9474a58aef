import numpy as np
import pytest

from activeseg.core.partition import Region, crop, partition_image, patch_starts


def test_overlapping_grid_counts():
    # 128 px, l = 64, rho = 0.5: step 32, starts 0, 32, 64 -> 3 x 3 patches
    assert patch_starts(128, 64, 0.5) == [0, 32, 64]
    assert len(partition_image("a", 128, 128, 64, 0.5)) == 9
    # paper's seamless example: 512 with l = 128 -> 4 per axis; with rho = 0.5 -> 7 per axis
    assert len(partition_image("a", 512, 512, 128, 0.0)) == 16
    assert len(partition_image("a", 512, 512, 128, 0.5)) == 49


def test_border_mirror_padded_when_missing_part_is_small():
    # 100 px, l = 64, rho = 0: one full patch, 36 px left; the next patch misses 28 < 32 -> padded
    assert patch_starts(100, 64, 0.0) == [0, 64]


def test_border_clipped_when_missing_part_is_large():
    # 130 px: patches at 0 and 64, 2 px left; the next patch would miss 62 >= 32 -> clipped
    assert patch_starts(130, 64, 0.0) == [0, 64]
    # 90 px: one patch, 26 px left, missing 38 >= 32 -> clipped
    assert patch_starts(90, 64, 0.0) == [0]


def test_image_smaller_than_patch_is_an_error():
    with pytest.raises(ValueError, match="smaller than the patch side"):
        patch_starts(50, 64, 0.5)


def test_region_ids_are_stable_and_readable():
    r = Region("img-01", 32, 64, 96, 128)
    assert r.id == "img-01_y0032_x0064_64x64"
    assert Region.from_dict(r.to_dict()) == r


def test_crop_mirror_pads_outside_the_image():
    a = np.arange(12).reshape(3, 4)
    part = crop(a, Region("a", 1, 2, 5, 6))
    assert part.shape == (4, 4)
    # rows 1, 2 then mirrored 2, 1; columns 2, 3 then mirrored 3, 2
    assert part.tolist() == [[6, 7, 7, 6], [10, 11, 11, 10], [10, 11, 11, 10], [6, 7, 7, 6]]
