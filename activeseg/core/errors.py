"""The error a dataset folder raises, and the decompression-bomb check shared by images and slides."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

MAX_PIXELS = Image.MAX_IMAGE_PIXELS  # Pillow's own decompression-bomb threshold (about 89 million pixels)


class DatasetError(ValueError):
    """The dataset folder is not usable; the message names the file and the problem."""


def check_pixels(path: Path, width: int, height: int, what: str) -> None:
    """Refuse a file whose header declares more than :data:`MAX_PIXELS` pixels, before decoding it."""
    if width * height > MAX_PIXELS:
        raise DatasetError(f"{path}: {what} declares {height} x {width} pixels (height x width), over the limit of "
                           f"{MAX_PIXELS} (a decompression bomb?); not decoded")
