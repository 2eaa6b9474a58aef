import numpy as np
import pytest

from activeseg.core.config import load_config
from activeseg.core.labels import LabelState
from activeseg.core.pool import initial_regions, pool_regions, round_budget, unlabeled
from activeseg.core.partition import Region


def test_pool_regions_at_both_granularities(tiny_dataset):
    stems = tiny_dataset.stems[:2]
    patches = pool_regions(tiny_dataset, stems, load_config(None, ["partition.side=32"]))
    assert len(patches) == 2 * 9 and len({r.id for r in patches}) == 18
    images = pool_regions(tiny_dataset, stems, load_config(None, ["partition.granularity=image"]))
    assert [(r.stem, r.y1, r.x1) for r in images] == [(stems[0], 64, 64), (stems[1], 64, 64)]


def test_budget_from_fraction_or_pixels():
    state = LabelState.empty({"a": (100, 100)})
    assert round_budget(load_config(None, ["query.budget_fraction=0.05"]), state) == 500
    assert round_budget(load_config(None, ["query.budget_pixels=123"]), state) == 123


def test_unlabeled_drops_fully_revealed_regions():
    state = LabelState.empty({"a": (8, 8)})
    regions = [Region("a", 0, 0, 4, 4), Region("a", 0, 2, 4, 6), Region("a", 4, 4, 8, 8)]
    state.reveal(regions[0], np.zeros((4, 4), np.uint8), 0, "t")
    assert unlabeled(regions, state) == regions[1:]


def test_initial_set_is_seeded():
    regions = [Region("a", i, 0, i + 1, 1) for i in range(20)]
    assert initial_regions(regions, 4, 1) == initial_regions(regions, 4, 1)
    assert initial_regions(regions, 4, 1) != initial_regions(regions, 4, 2)
    with pytest.raises(ValueError, match="at least 1"):
        initial_regions(regions, 0, 1)
