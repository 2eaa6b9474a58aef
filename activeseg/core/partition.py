"""Regions an annotator is asked to label: whole images or square patches (FocAnnot, Sect. 3.2).

Patches have side ``l`` and step ``l * (1 - rho)``. The leftover strip at the bottom or right of an
image is covered by one more patch, mirror-padded beyond the border, when the missing part is smaller
than ``l / 2``; otherwise it is clipped (left out of the partition). The paper only says "padded ...
if the required size is smaller than l/2, otherwise just clipping": we read "clipping" as dropping
the strip, so every patch keeps side ``l``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)  # slots: a pool of a million tiles stays small
class Region:
    """A box ``[y0, y1) x [x0, x1)`` of image ``stem``; it may reach past the image (mirror padding)."""

    stem: str
    y0: int
    x0: int
    y1: int
    x1: int

    @property
    def id(self) -> str:
        """Stable, readable and filesystem-safe: ``<stem>_y<y0>_x<x0>_<h>x<w>``."""
        return f"{self.stem}_y{self.y0:04d}_x{self.x0:04d}_{self.y1 - self.y0}x{self.x1 - self.x0}"

    def clipped(self, height: int, width: int) -> tuple[slice, slice]:
        """The part of the box inside an image of that size, as slices."""
        return slice(self.y0, min(self.y1, height)), slice(self.x0, min(self.x1, width))

    def to_dict(self) -> dict:
        return {"id": self.id, "stem": self.stem, "box": [self.y0, self.x0, self.y1, self.x1]}

    @staticmethod
    def from_dict(d: dict) -> "Region":
        return Region(d["stem"], *d["box"])


def patch_starts(length: int, side: int, overlap: float) -> list[int]:
    """Start offsets along one axis (FocAnnot border rule, see the module docstring)."""
    if length < side:
        raise ValueError(f"image side {length} is smaller than the patch side {side}")
    step = max(1, int(round(side * (1 - overlap))))
    starts = list(range(0, length - side + 1, step))
    leftover = length - (starts[-1] + side)
    if leftover > 0:
        missing = starts[-1] + step + side - length
        if missing < side / 2:
            starts.append(starts[-1] + step)
    return starts


def partition_image(stem: str, height: int, width: int, side: int, overlap: float) -> list[Region]:
    """All patches of one image, row-major."""
    rows = [(y, y + side) for y in patch_starts(height, side, overlap)]
    cols = [(x, x + side) for x in patch_starts(width, side, overlap)]
    return [Region(stem, y0, x0, y1, x1) for y0, y1 in rows for x0, x1 in cols]  # shared ints: less memory


def whole_image(stem: str, height: int, width: int) -> Region:
    return Region(stem, 0, 0, height, width)


def crop(array: np.ndarray, region: Region) -> np.ndarray:
    """The region's pixels of an (H, W, ...) array, mirror-padded where the box leaves the image."""
    return mirror_pad(array[region.clipped(*array.shape[:2])], region)


def mirror_pad(part: np.ndarray, region: Region) -> np.ndarray:
    """The in-image part (h, w, ...) of the region's box, mirror-padded to the whole box."""
    pad_y, pad_x = (region.y1 - region.y0) - part.shape[0], (region.x1 - region.x0) - part.shape[1]
    if pad_y or pad_x:
        widths = [(0, pad_y), (0, pad_x)] + [(0, 0)] * (part.ndim - 2)
        part = np.pad(part, widths, mode="symmetric")
    return part
