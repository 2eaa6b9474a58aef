"""The images of the label exchange: PNG bytes of crops and masks, and the yellow outline of a region."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw


OUTLINE = (255, 255, 0)


def png_bytes(array: np.ndarray, compress_level: int = 6) -> bytes:
    """PNG of an (H, W) or (H, W, 3) uint8 array; `compress_level` from 0 (none) to 9 (Pillow's default 6)."""
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG", compress_level=compress_level)
    return out.getvalue()


def mask_png(mask: np.ndarray, classes: int) -> bytes:
    """PNG of an (h, w) class-id mask in the dataset convention: {0, 255} when binary, else class ids."""
    return png_bytes((mask * 255 if classes == 2 else mask).astype(np.uint8))


def to_uint8(image: np.ndarray) -> np.ndarray:
    """(H, W, C) float in [0, 1] -> (H, W) or (H, W, 3) uint8."""
    pixels = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    return pixels[:, :, 0] if pixels.shape[2] == 1 else pixels


def outlined(crop: np.ndarray, box: tuple[int, int, int, int], scale: int = 1) -> np.ndarray:
    """An RGB copy of a uint8 crop enlarged ``scale`` times (nearest neighbour) with the box (y0, x0, y1,
    x1 in crop pixels; end exclusive) outlined in yellow on its edge pixels, ``max(1, scale // 2)`` wide."""
    img = Image.fromarray(crop).convert("RGB")
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    y0, x0, y1, x1 = (v * scale for v in box)
    ImageDraw.Draw(img).rectangle([x0, y0, x1 - 1, y1 - 1], outline=OUTLINE, width=max(1, scale // 2))
    return np.asarray(img)
