"""Whole-slide pools: real tiled pyramidal TIFFs (written with tifffile, sub-resolutions in SubIFDs) read
lazily per region, tissue detection, and a simulated campaign on two slides."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from activeseg.core.config import ConfigError, SlidesConfig, load_config
from activeseg.core.data import DatasetError, load_dataset
from activeseg.core.partition import Region, crop
from activeseg.core.pool import pool_regions
from activeseg.core.slides import TissueMap, detect_tissue, write_pyramid
from activeseg.core.synthetic import synthesize, synthesize_slides
from activeseg.loop.simulate import simulate
from tests.conftest import TINY

BLOCK = 64  # synthetic slides: 2 x 3 blocks of 64 px, the last column blank glass -> 128 x 192 at level 0


@pytest.fixture(scope="module")
def written_slides(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthesize_slides(tmp_path_factory.mktemp("slides") / "data", n=4, blocks=(2, 3), block=BLOCK, tile=32)


@pytest.fixture
def slide_dir(written_slides: Path, tmp_path: Path) -> Path:
    """A copy of the written slides that a test may change."""
    return Path(shutil.copytree(written_slides, tmp_path / "data"))


def level_array(path: Path, level: int) -> np.ndarray:
    """The whole pyramid level as tifffile reads it (the reference, never used by the library)."""
    with tifffile.TiffFile(path) as tif:
        return tif.series[0].levels[level].asarray()


def test_tissue_map_shares_hand_checked() -> None:
    mask = np.zeros((4, 4), bool)
    mask[:2, :2] = True  # thumbnail: tissue in the top-left quarter; 2 slide pixels per thumbnail pixel
    shares = TissueMap(mask, 2.0).shares(np.array([[0, 0, 4, 4], [0, 0, 8, 8], [4, 4, 8, 8], [2, 0, 6, 4]]))
    assert shares.tolist() == [1.0, 0.25, 0.0, 0.5]


def test_detect_tissue_on_saturation() -> None:
    thumb = np.full((4, 6, 3), 250, np.uint8)
    thumb[:, :2] = (200, 80, 160)  # stained
    thumb[0, 5] = (255, 255, 255)
    assert detect_tissue(thumb).tolist() == [[True, True, False, False, False, False]] * 4
    assert not detect_tissue(np.full((4, 4, 3), 255, np.uint8)).any()  # blank glass
    assert detect_tissue(np.zeros((3, 3, 1), np.uint8)).all()  # grey: no saturation, all tissue


def test_tissue_detection_drops_the_blank_area(slide_dir: Path) -> None:
    dataset = load_dataset(slide_dir, 2, SlidesConfig(level=0))
    for stem in dataset.stems:
        tiles = dataset.tiles(stem, 32, 0.0)
        assert all(r.x1 <= 2 * BLOCK for r in tiles)  # no tile on the blank column
        assert len(tiles) >= 8  # of the 16 tiles on the rendered blocks (pale stains are faint)


def test_tissue_detection_on_a_drawn_slide(tmp_path: Path) -> None:
    image = np.full((128, 128, 3), 255, np.uint8)
    image[:, :48] = (180, 60, 140)  # tissue: the left 48 columns
    (tmp_path / "slides").mkdir()
    write_pyramid(tmp_path / "slides" / "drawn.tif", image, levels=3, tile=32)
    dataset = load_dataset(tmp_path, 2, SlidesConfig(level=0, min_tissue=0.5))
    assert [(r.y0, r.x0) for r in dataset.tiles("drawn", 32, 0.0)] == [(y, x) for y in (0, 32, 64, 96) for x in (0, 32)]
    dataset = load_dataset(tmp_path, 2, SlidesConfig(level=1, min_tissue=0.5))  # 64 x 64 at level 1
    assert [(r.y0, r.x0) for r in dataset.tiles("drawn", 16, 0.0)] == [(y, x) for y in (0, 16, 32, 48) for x in (0, 16)]


@pytest.mark.parametrize("level", [0, 1, 2])
def test_region_pixels_equal_the_array(slide_dir: Path, level: int) -> None:
    dataset = load_dataset(slide_dir, 2, SlidesConfig(level=level))
    path = slide_dir / "slides" / "slide-0.tif"
    reference = level_array(path, level)
    mask0 = tifffile.imread(slide_dir / "slide_masks" / "slide-0.tif")
    sample = dataset.samples["slide-0"]
    assert (sample.height, sample.width, sample.channels) == (*reference.shape[:2], 3)
    side = 32 >> level
    for region in [Region("slide-0", 0, 0, side, side), Region("slide-0", side // 2, side, side * 3 // 2, 2 * side),
                   Region("slide-0", sample.height - side // 2, sample.width - side // 2,
                          sample.height + side // 2, sample.width + side // 2)]:  # past the border: mirrored
        np.testing.assert_array_equal(dataset.region_pixels(region), crop(reference, region) / np.float32(255))
        ys, xs = region.clipped(sample.height, sample.width)
        expected = (mask0[:: 2**level, :: 2**level][ys, xs] > 0).astype(np.uint8)  # {0, 255} reads as {0, 1}
        np.testing.assert_array_equal(dataset.region_mask(region), expected)


def test_a_blank_slide_cannot_be_evaluated(tmp_path: Path) -> None:
    (tmp_path / "slides").mkdir()
    write_pyramid(tmp_path / "slides" / "blank.tif", np.full((64, 64, 3), 255, np.uint8), levels=2, tile=32)
    dataset = load_dataset(tmp_path, 2)
    assert dataset.tiles("blank", 32, 0.0) == []
    with pytest.raises(DatasetError, match=r"blank\.tif: no tissue tile to validate or evaluate on \(data\.slides\."
                                           r"min_tissue 0\.25\); a blank slide\?"):
        dataset.eval_units(["blank"])


def test_a_slide_is_never_read_whole(slide_dir: Path) -> None:
    dataset = load_dataset(slide_dir, 2)
    with pytest.raises(DatasetError, match=r"slide-0\.tif: a whole-slide image is read per region"):
        dataset.image("slide-0")
    with pytest.raises(DatasetError, match=r"slide-0\.tif: a whole-slide image is read per region"):
        dataset.mask("slide-0")


def test_bad_slide_folders_name_the_file(slide_dir: Path) -> None:
    with pytest.raises(DatasetError, match=r"slide-0\.tif: no pyramid level 3 \(data\.slides\.level\); the slide "
                                           r"has levels 0\.\.2"):
        load_dataset(slide_dir, 2, SlidesConfig(level=3))
    write_pyramid(slide_dir / "slide_masks" / "slide-1.tif", np.zeros((64, 64), np.uint8), 1, 32)
    with pytest.raises(DatasetError, match=r"slide_masks/slide-1\.tif: mask size 64 x 64 \(height x width\) differs "
                                           r"from its slide's level 0 128 x 192"):
        load_dataset(slide_dir, 2)
    (slide_dir / "slide_masks" / "slide-1.tif").unlink()
    (slide_dir / "slide_masks" / "orphan.tif").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"orphan\.tif: slide mask without a slide of the same stem"):
        load_dataset(slide_dir, 2)
    (slide_dir / "slide_masks" / "orphan.tif").unlink()
    (slide_dir / "slides" / "broken.svs").write_bytes(b"not a tiff")
    with pytest.raises(DatasetError, match=r"broken\.svs: unreadable slide"):
        load_dataset(slide_dir, 2)


def test_a_slide_without_ground_truth_is_a_pool_for_people(slide_dir: Path) -> None:
    (slide_dir / "slide_masks" / "slide-2.tif").unlink()
    dataset = load_dataset(slide_dir, 2)
    assert dataset.samples["slide-2"].mask_path is None and dataset.tiles("slide-2", 32, 0.0)
    with pytest.raises(DatasetError, match=r"slide-2\.tif: no ground truth slide_masks/slide-2\.tif"):
        dataset.region_mask(Region("slide-2", 0, 0, 32, 32))


def test_mask_values_outside_the_classes_name_the_mask(slide_dir: Path) -> None:
    write_pyramid(slide_dir / "slide_masks" / "slide-0.tif", np.full((128, 192), 7, np.uint8), 1, 32)
    with pytest.raises(DatasetError, match=r"slide_masks/slide-0\.tif: mask value 7 near level-0 pixel \(x=32, "
                                           r"y=0\) outside the classes 0\.\.2"):
        load_dataset(slide_dir, 3).region_mask(Region("slide-0", 0, 32, 32, 64))


def test_slides_beside_images(tmp_path: Path) -> None:
    synthesize(tmp_path / "data", n=3, size=64, seed=0)
    synthesize_slides(tmp_path / "data", n=2, blocks=(2, 3), block=BLOCK, tile=32)
    cfg = load_config(None, ["partition.side=32", "partition.overlap=0", "data.slides.eval_tile=64"])
    dataset = load_dataset(tmp_path / "data", 2, cfg.data.slides)
    assert dataset.stems == ["slide-0", "slide-1", "syn-000", "syn-001", "syn-002"]
    regions = pool_regions(dataset, ["slide-0", "syn-000"], cfg)
    assert sum(r.stem == "syn-000" for r in regions) == 4 and all(r.x1 <= 2 * BLOCK for r in regions)
    units = dataset.eval_units(["slide-0", "syn-000"])
    assert units["syn-000"] == Region("syn-000", 0, 0, 64, 64)
    assert {k for k in units if k != "syn-000"} <= {f"slide-0_y{y:04d}_x{x:04d}_64x64" for y in (0, 64) for x in (0, 64)}
    with pytest.raises(ConfigError, match=r"partition\.granularity: 'image' cannot query the whole-slide image"):
        pool_regions(dataset, ["slide-0"], load_config(None, ["partition.granularity=image"]))


def test_simulated_campaign_on_two_slides(slide_dir: Path, tmp_path: Path) -> None:
    """Four slides: two in the pool, one for validation, one for the test; two rounds, tiny model."""
    cfg = load_config(None, [*TINY, "data.slides.level=1", "data.slides.eval_tile=32"])
    results = simulate(cfg, slide_dir, ["random", "entropy"], [0], tmp_path / "out", rounds=2, progress=False)
    split = json.loads((tmp_path / "out" / "split.json").read_text())
    assert len(split["train"]) == 2
    assert [(r["strategy"], r["round"]) for r in results["runs"]] == [("random", 0), ("random", 1),
                                                                      ("entropy", 0), ("entropy", 1)]
    for strategy in ("random", "entropy"):
        runs = [r for r in results["runs"] if r["strategy"] == strategy]
        assert runs[0]["labeled_pixel_fraction"] < runs[1]["labeled_pixel_fraction"]
        folder = tmp_path / "out" / "runs" / strategy / "seed-0"
        labeled = json.loads((folder / "round-001" / "labels.json").read_text())["history"]
        assert {h["region"]["stem"] for h in labeled} <= set(split["train"])
        assert all(h["region"]["box"][1] < BLOCK for h in labeled)  # level 1: the blank column starts at 64
        metrics = json.loads((folder / "round-001" / "metrics.json").read_text())
        assert metrics["per_image"] and all(k.startswith(split["test"][0] + "_y") for k in metrics["per_image"])
