"""What is known about the training pool: revealed pixels, their labels, and pseudo-labels.

Cost is counted in newly revealed pixels, so image-level and patch-level strategies are comparable and
overlapping patches never pay twice for a pixel. Pseudo-labels (from a model, not a person) live in
their own layer: they are never counted as cost, a human label always replaces them, and each carries
the id of the model that made it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from activeseg.core.partition import Region


@dataclass
class LabelState:
    """Per training image: ``known`` (H, W) bool, ``labels`` (H, W) uint8 valid where known,
    ``pseudo`` (H, W) uint8 and ``pseudo_known`` (H, W) bool for pseudo-labels."""

    shapes: dict[str, tuple[int, int]]
    known: dict[str, np.ndarray] = field(default_factory=dict)
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    pseudo: dict[str, np.ndarray] = field(default_factory=dict)
    pseudo_known: dict[str, np.ndarray] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    pseudo_regions: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def empty(cls, shapes: dict[str, tuple[int, int]]) -> "LabelState":
        state = cls(shapes=dict(shapes))
        for stem, (h, w) in shapes.items():
            state.known[stem] = np.zeros((h, w), bool)
            state.labels[stem] = np.zeros((h, w), np.uint8)
            state.pseudo[stem] = np.zeros((h, w), np.uint8)
            state.pseudo_known[stem] = np.zeros((h, w), bool)
        return state

    def new_pixels(self, region: Region) -> int:
        """Pixels of the region inside the image that are not yet revealed."""
        ys, xs = region.clipped(*self.shapes[region.stem])
        return int((~self.known[region.stem][ys, xs]).sum())

    def reveal(self, region: Region, mask: np.ndarray, round_number: int, source: str) -> int:
        """Write a human label for the region; ``mask`` is (h, w) for the in-image part of the box.

        Returns the number of newly revealed pixels (the cost). Pseudo-labels under it are dropped.
        """
        stem = region.stem
        ys, xs = region.clipped(*self.shapes[stem])
        known = self.known[stem][ys, xs]
        if mask.shape != known.shape:
            raise ValueError(f"{region.id}: label of shape {mask.shape}, expected {known.shape}")
        cost = int((~known).sum())
        self.labels[stem][ys, xs] = np.where(known, self.labels[stem][ys, xs], mask)
        self.known[stem][ys, xs] = True
        self.pseudo_known[stem][ys, xs] = False
        self.history.append({"region": region.to_dict(), "round": round_number, "cost": cost, "source": source})
        return cost

    def set_pseudo(self, region: Region, mask: np.ndarray, origin: str) -> int:
        """Pseudo-label the unknown pixels of a region; returns how many pixels got one."""
        stem = region.stem
        ys, xs = region.clipped(*self.shapes[stem])
        free = ~self.known[stem][ys, xs]
        self.pseudo[stem][ys, xs] = np.where(free, mask, self.pseudo[stem][ys, xs])
        self.pseudo_known[stem][ys, xs] |= free
        self.pseudo_regions[region.id] = {"region": region.to_dict(), "origin": origin}
        return int(free.sum())

    def clear_pseudo(self) -> None:
        for stem in self.shapes:
            self.pseudo_known[stem][:] = False
        self.pseudo_regions.clear()

    def revealed_pixels(self) -> int:
        return int(sum(k.sum() for k in self.known.values()))

    def total_pixels(self) -> int:
        return int(sum(h * w for h, w in self.shapes.values()))

    def revealed_fraction(self) -> float:
        return self.revealed_pixels() / self.total_pixels()

    def labeled_region_ids(self) -> set[str]:
        return {h["region"]["id"] for h in self.history}

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {}
        for stem in self.shapes:
            arrays[f"known/{stem}"] = np.packbits(self.known[stem])
            arrays[f"labels/{stem}"] = self.labels[stem]
            arrays[f"pseudo/{stem}"] = self.pseudo[stem]
            arrays[f"pseudo_known/{stem}"] = np.packbits(self.pseudo_known[stem])
        np.savez_compressed(folder / "labels.npz", **arrays)
        meta = {"shapes": self.shapes, "history": self.history, "pseudo_regions": self.pseudo_regions}
        (folder / "labels.json").write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, folder: Path) -> "LabelState":
        folder = Path(folder)
        meta = json.loads((folder / "labels.json").read_text())
        shapes = {k: tuple(v) for k, v in meta["shapes"].items()}
        state = cls(shapes=shapes, history=meta["history"], pseudo_regions=meta["pseudo_regions"])
        with np.load(folder / "labels.npz") as data:
            for stem, (h, w) in shapes.items():
                state.known[stem] = np.unpackbits(data[f"known/{stem}"])[: h * w].reshape(h, w).astype(bool)
                state.labels[stem] = data[f"labels/{stem}"]
                state.pseudo[stem] = data[f"pseudo/{stem}"]
                state.pseudo_known[stem] = (
                    np.unpackbits(data[f"pseudo_known/{stem}"])[: h * w].reshape(h, w).astype(bool)
                )
        return state
