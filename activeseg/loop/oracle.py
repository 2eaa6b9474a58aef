"""The simulated oracle: it answers a label request from the ground truth."""

from __future__ import annotations

import numpy as np

from activeseg.core.data import Dataset
from activeseg.core.labels import LabelState
from activeseg.core.partition import Region

SIMULATED = "simulated-oracle"


def ground_truth(dataset: Dataset, region: Region) -> np.ndarray:
    """The in-image part of the region's true mask, (h, w) uint8 class ids."""
    return dataset.region_mask(region)


def reveal_from_ground_truth(state: LabelState, dataset: Dataset, regions: list[Region], round_number: int) -> int:
    """Reveal every region from the ground truth; returns the pixels newly revealed."""
    return sum(state.reveal(r, ground_truth(dataset, r), round_number, SIMULATED) for r in regions)
