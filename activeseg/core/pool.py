"""The training pool as candidate regions at the configured granularity, and the round's budget."""

from __future__ import annotations

import numpy as np

from activeseg.core.config import Config, ConfigError
from activeseg.core.data import Dataset
from activeseg.core.labels import LabelState
from activeseg.core.partition import Region, whole_image


def pool_regions(dataset: Dataset, stems: list[str], cfg: Config) -> list[Region]:
    """Every region of the training pool: whole images or FocAnnot patches (of a whole-slide image,
    only those on tissue: :meth:`Dataset.tiles`), in a stable order."""
    p = cfg.partition
    regions: list[Region] = []
    for stem in sorted(stems):
        s = dataset.samples[stem]
        if p.granularity == "patch":
            regions.extend(dataset.tiles(stem, p.side, p.overlap))
        elif dataset.is_slide(stem):
            raise ConfigError(f"partition.granularity: 'image' cannot query the whole-slide image {s.image_path}; "
                              "use 'patch'")
        else:
            regions.append(whole_image(stem, s.height, s.width))
    return regions


def unlabeled(regions: list[Region], state: LabelState) -> list[Region]:
    """Regions with at least one pixel not yet revealed."""
    return [r for r in regions if state.new_pixels(r) > 0]


def round_budget(cfg: Config, state: LabelState) -> int:
    """Pixels per round: ``query.budget_pixels`` if set, else ``budget_fraction`` of the pool."""
    if cfg.query.budget_pixels is not None:
        return int(cfg.query.budget_pixels)
    return max(1, int(round(cfg.query.budget_fraction * state.total_pixels())))


def initial_regions(regions: list[Region], count: int, seed: int) -> list[Region]:
    """The seeded initial labeled set: ``count`` regions drawn without replacement."""
    if count < 1:
        raise ValueError("partition.initial_labeled must be at least 1 so that the first model can train")
    count = min(count, len(regions))
    picks = np.random.default_rng(seed).choice(len(regions), size=count, replace=False)
    return [regions[i] for i in sorted(picks)]
