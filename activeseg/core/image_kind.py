"""What kind of images a dataset holds, for ``train.augment.preset: auto``: grey (em), bright-field
RGB (histology: a bright background) or dark-field RGB (fluorescence: a dark background).

Per image, a central box of at most ``BOX`` x ``BOX`` pixels is read (a slide is never read whole):
one channel, or three nearly equal ones (a grey image saved as RGB), is grey; else its median brightness
(mean over channels) above ``BRIGHT`` is bright-field. The dataset's kind is the one of at least
``AGREE`` of its images; when no kind is that common, detection is not reliable and the preset is none.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from activeseg.core.data import Dataset

BOX = 256
BRIGHT = 0.5
GREY_SPREAD = 0.02  # mean |R - G| + |G - B| below this: a grey image stored as RGB
AGREE = 0.8


@dataclass(frozen=True)
class Detected:
    """The preset ``auto`` resolves to and why, in words."""

    preset: str
    reason: str


def image_kind(pixels: np.ndarray) -> str:
    """em, histology or fluorescence for one image's pixels (H, W, C) in [0, 1]."""
    if pixels.shape[2] == 1:
        return "em"
    spread = np.abs(pixels[..., 0] - pixels[..., 1]).mean() + np.abs(pixels[..., 1] - pixels[..., 2]).mean()
    if spread < GREY_SPREAD:
        return "em"
    return "histology" if float(np.median(pixels.mean(axis=2))) > BRIGHT else "fluorescence"


def central_box(dataset: Dataset, stem: str) -> np.ndarray:
    """(h, w, C) pixels of the central box of at most BOX x BOX of an image or slide level."""
    s = dataset.samples[stem]
    h, w = min(BOX, s.height), min(BOX, s.width)
    y0, x0 = (s.height - h) // 2, (s.width - w) // 2
    return dataset.read(stem, slice(y0, y0 + h), slice(x0, x0 + w))


def kind_of(kinds: list[str]) -> Detected:
    """The kind of at least AGREE of ``kinds`` (one per image), else none."""
    values, counts = np.unique(kinds, return_counts=True)
    best = int(np.argmax(counts))
    share = f"{counts[best]} of {len(kinds)} images look {values[best]}"
    if counts[best] >= AGREE * len(kinds):
        return Detected(str(values[best]), f"auto: {share}")
    return Detected("none", f"auto: not reliable ({share}, fewer than {AGREE:.0%}); no augmentation")


def detect_preset(dataset: Dataset) -> Detected:
    """The augmentation preset for ``dataset``'s images (module docstring)."""
    return kind_of([image_kind(central_box(dataset, stem)) for stem in dataset.stems])
