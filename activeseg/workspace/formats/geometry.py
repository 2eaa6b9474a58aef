"""Masks to polygons and back, in pixel-edge coordinates ``(x, y)``: pixel ``(row r, column c)`` covers
``[c, c+1) x [r, r+1)`` and its centre is ``(c + 0.5, r + 0.5)`` (QuPath's convention).

Outlines come from contourpy's marching squares (matplotlib's contour engine) at level 0.5 on the
zero-padded mask: every edge crossing lies halfway between two pixel centres, so a pixel centre is never
on an outline and :func:`rasterize`, which keeps the pixels whose centre is inside, gives the mask back
bit for bit. Holes stay holes: a polygon is its exterior ring then its hole rings, each closed
(first point repeated last). Straight runs are reduced to their end points.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Ring = np.ndarray
"""(n, 2) float array of (x, y) points, closed."""
Polygon = list[Ring]
"""The exterior ring, then the hole rings."""


def _straight(ring: Ring) -> Ring:
    """The closed ring without the points that lie on the straight line between their neighbours."""
    open_ring = ring[:-1]
    if len(open_ring) < 4:
        return ring
    before, after = np.roll(open_ring, 1, axis=0), np.roll(open_ring, -1, axis=0)
    d1, d2 = open_ring - before, after - open_ring
    keep = d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0] != 0
    kept = open_ring[keep]
    return np.vstack([kept, kept[:1]])


def mask_polygons(mask: np.ndarray, x0: float = 0.0, y0: float = 0.0) -> list[Polygon]:
    """The polygons (with holes) covering the true pixels of a 2-D boolean mask whose top-left pixel is
    at ``(x0, y0)``, in pixel-edge coordinates."""
    import contourpy

    if not mask.any():
        return []
    padded = np.pad(mask.astype(np.float64), 1)
    generator = contourpy.contour_generator(z=padded, fill_type=contourpy.FillType.OuterOffset,
                                            name="serial", corner_mask=False)
    points, offsets = generator.filled(0.5, 1.5)
    shift = np.array([x0 - 0.5, y0 - 0.5])
    polygons = []
    for pts, offs in zip(points, offsets):
        rings = [_straight(pts[a:b] + shift) for a, b in zip(offs[:-1], offs[1:])]
        polygons.append([r for r in rings if len(r) >= 4])
    return [p for p in polygons if p]


def ring_bounds(ring: Ring) -> tuple[float, float, float, float]:
    """(xmin, ymin, xmax, ymax)."""
    return float(ring[:, 0].min()), float(ring[:, 1].min()), float(ring[:, 0].max()), float(ring[:, 1].max())


def rasterize(polygons: Sequence[Polygon], box: tuple[int, int, int, int]) -> np.ndarray:
    """The boolean mask of the pixels of ``box`` (``(y0, x0, y1, x1)``, image pixels) whose centre lies
    inside some polygon (inside its exterior and outside its holes)."""
    from matplotlib.path import Path as MplPath

    by0, bx0, by1, bx1 = box
    out = np.zeros((by1 - by0, bx1 - bx0), dtype=bool)
    for polygon in polygons:
        xmin, ymin, xmax, ymax = ring_bounds(polygon[0])
        c0, c1 = max(bx0, int(np.floor(xmin - 0.5))), min(bx1, int(np.ceil(xmax + 0.5)))
        r0, r1 = max(by0, int(np.floor(ymin - 0.5))), min(by1, int(np.ceil(ymax + 0.5)))
        if c0 >= c1 or r0 >= r1:
            continue
        cols, rows = np.meshgrid(np.arange(c0, c1) + 0.5, np.arange(r0, r1) + 0.5)
        centres = np.column_stack([cols.ravel(), rows.ravel()])
        inside = MplPath(polygon[0]).contains_points(centres)
        for hole in polygon[1:]:
            inside &= ~MplPath(hole).contains_points(centres)
        out[r0 - by0:r1 - by0, c0 - bx0:c1 - bx0] |= inside.reshape(r1 - r0, c1 - c0)
    return out
