"""Strategies that read images whole (label_propagation's pseudo-labels, bsq's infoVAE cache key) refuse
whole-slide images at the start of the query, naming the strategy and the slide."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from activeseg.core.config import ConfigError, SlidesConfig
from activeseg.core.data import load_dataset
from activeseg.core.labels import LabelState
from activeseg.strategies import QueryContext
from activeseg.strategies.registry import get_strategy
from tests.core.test_slides import slide_dir, written_slides  # noqa: F401  (fixtures)

STEMS = [f"slide-{i}" for i in range(4)]


@pytest.mark.parametrize("name", ["label_propagation", "bsq"])
def test_strategies_that_read_images_whole_refuse_slides(slide_dir: Path, name: str) -> None:  # noqa: F811
    dataset = load_dataset(slide_dir, 2, SlidesConfig(level=1))
    ctx = QueryContext([], 1024, LabelState.empty({}), dataset, np.random.default_rng(0),
                       extras={"split": {"train": STEMS[:2], "val": [STEMS[2]], "test": [STEMS[3]]}})
    with pytest.raises(ConfigError, match=rf"query\.strategy: '{name}' cannot query whole-slide images \(.*slides/"
                                          r"slide-0\.tif\): .*; a slide is only read per region"):
        get_strategy(name).select(ctx)
