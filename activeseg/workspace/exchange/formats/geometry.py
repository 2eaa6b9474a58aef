"""Masks to polygons and back, in pixel-edge coordinates ``(x, y)``: pixel ``(row r, column c)`` covers
``[c, c+1) x [r, r+1)`` and its centre is ``(c + 0.5, r + 0.5)`` (QuPath's convention).

Masks to polygons (:func:`mask_polygons`): the objects of the mask are labelled 4-connected (two pixels
touching only at a corner are two objects; ``scipy.ndimage.label``: the objects of
``skimage.measure.label(connectivity=1)``, several times faster on 64 x 64 masks), and scikit-image traces
each object's outlines with marching squares (``skimage.measure.find_contours``) at level 0.5 on the
object's window with a background pixel around it, background fully connected (8-connected, so no
outline touches another, even at a point). Every vertex lies halfway between two pixel centres, so a
pixel centre is never on an outline and :func:`rasterize`, which keeps the pixels whose centre is inside,
gives the mask back bit for bit. An object's leftmost outline is its exterior (it encloses the others),
the others are its holes (interior rings); shapely builds the polygon, drops the points on straight runs
(``simplify`` with tolerance 0) and makes it valid (``make_valid``, method "structure"): a no-op on what
marching squares gives here, kept as the guard that every exported polygon is valid GeoJSON.

Polygons to masks (:func:`rasterize`): ``skimage.draw.polygon`` fills each exterior ring and its holes
are subtracted (a shape inside another shape's hole stays: each polygon is filled on its own).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import shapely
from scipy import ndimage
from shapely.geometry import LinearRing, Polygon
from skimage.draw import polygon as fill_polygon
from skimage.measure import find_contours

FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)
"""Pixels sharing an edge are one object; touching at a corner only, two."""


def _outline(window: np.ndarray, x0: float, y0: float) -> Polygon:
    """The polygon of one 4-connected object: ``window`` is its (h, w) boolean mask in its bounding box
    grown by one background pixel each side, whose top-left pixel is at ``(x0, y0)``."""
    rings = [contour[:, ::-1] + [x0 + 0.5, y0 + 0.5] for contour in find_contours(window, 0.5)]  # (n, 2) x, y
    exterior = int(np.argmin([ring[:, 0].min() for ring in rings]))  # it encloses the holes: the leftmost
    return Polygon(rings[exterior], rings[:exterior] + rings[exterior + 1:])


def mask_polygons(mask: np.ndarray, x0: float = 0.0, y0: float = 0.0) -> list[Polygon]:
    """The valid polygons (holes as interior rings) covering the true pixels of an (h, w) boolean mask
    whose top-left pixel is at ``(x0, y0)``, in pixel-edge coordinates: one per 4-connected object."""
    labels, _ = ndimage.label(np.pad(mask, 1), structure=FOUR_CONNECTED)  # (h + 2, w + 2): object k is k
    outlines = []
    for k, (rows, cols) in enumerate(ndimage.find_objects(labels), start=1):
        r0, c0 = rows.start - 1, cols.start - 1  # the window grown by one pixel, still inside the padding
        window = labels[r0:rows.stop + 1, c0:cols.stop + 1] == k
        outlines.append(_outline(window, x0 + c0 - 1, y0 + r0 - 1))
    # Douglas-Peucker at tolerance 0 drops only the points on straight runs (the topology-preserving
    # simplifier gives the same polygons about three times slower)
    simple = shapely.simplify(np.array(outlines, dtype=object), 0.0, preserve_topology=False)
    return list(shapely.get_parts(shapely.make_valid(simple, method="structure", keep_collapsed=False)))


def _pixels(ring: LinearRing, box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The (rows, columns) of the pixels of ``box`` whose centre is inside ``ring`` (or on it)."""
    by0, bx0, by1, bx1 = box
    xy = np.asarray(ring.coords) - [bx0 + 0.5, by0 + 0.5]  # a pixel's centre -> its (column, row)
    return fill_polygon(xy[:, 1], xy[:, 0], (by1 - by0, bx1 - bx0))


def rasterize(polygons: Sequence[Polygon], box: tuple[int, int, int, int]) -> np.ndarray:
    """The (h, w) boolean mask of the pixels of ``box`` (``(y0, x0, y1, x1)``, image pixels) whose centre
    lies inside some polygon (inside its exterior and outside its holes)."""
    by0, bx0, by1, bx1 = box
    shape = (by1 - by0, bx1 - bx0)
    out = np.zeros(shape, dtype=bool)
    for polygon in polygons:
        xmin, ymin, xmax, ymax = polygon.bounds
        if xmax <= bx0 or ymax <= by0 or xmin >= bx1 or ymin >= by1:
            continue
        inside = np.zeros(shape, dtype=bool)
        inside[_pixels(polygon.exterior, box)] = True
        for hole in polygon.interiors:
            inside[_pixels(hole, box)] = False
        out |= inside
    return out
