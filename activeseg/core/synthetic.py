"""Procedurally generated, histology-like "intensive cell" segmentation data set.

:func:`synthesize` writes the plain-folder layout used by the pipeline::

    out/images/syn-000.png   RGB uint8, (H, W, 3)
    out/masks/syn-000.png    uint8, (H, W)
    out/styles.json          {stem: style name}
    out/objects.json         {stem: object type name}

Every image is crowded with objects (cells / nuclei / glands): ellipses with noisy, irregular
boundaries and random size and orientation, many of them touching or overlapping, on a textured
background (smooth noise, fibres, speckle), then blurred and corrupted by noise.

What each image draws:
- a stain style (:data:`STYLES`: ``he``, ``ihc``, ``pale``, ``darkfield``), which sets the colour model
  (bright-field absorption or dark-field emission), stain colours, object density, size, texture,
  contrast, blur and noise;
- an object type (:data:`OBJECT_TYPES`: ``round``, ``elongated`` spindle-like, ``lobulated`` large
  gland-like objects with strongly irregular boundaries), which reshapes the style's objects;
- its layout: the foreground share (in the style's range), then objects placed one by one, many
  against an earlier one, each with its own size, aspect, orientation, boundary harmonics and shade.

Styles and object types are assigned independently, in proportion to ``style_weights`` and
``object_weights`` (``data.synthetic`` in ``params.yaml``): counts are the weights' shares of ``n``
(largest remainders, every type with a positive weight at least once when ``n`` allows it), then
shuffled. The defaults make the ``darkfield`` style and the ``lobulated`` type rare (10 % of the
images each), so that a random selection often misses them and a strategy that finds them can gain.

Masks are exact: they are computed from the same label map that is used to render the image.
With ``classes == 2`` a mask is binary {0, 255}. With ``classes >= 3`` it holds class ids
``0 .. classes-1``: 0 background, ``classes-1`` the boundary ring (membrane) of every object,
and ``1 .. classes-2`` the object kinds; with ``classes >= 4`` each object is one of
``classes-2`` kinds, drawn larger and darker the higher the kind, so that the kinds are
distinguishable in the image.

Everything is determined by ``seed``: the same arguments give bit-identical files.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

from activeseg.core.config import ConfigError, SyntheticConfig

# Optical-density vectors of the common stains (Ruifrok & Johnston).
HEMATOXYLIN = (0.65, 0.70, 0.29)
EOSIN = (0.07, 0.99, 0.11)
DAB = (0.27, 0.57, 0.78)

MAX_OVERLAP = 0.35  # at most this share of a new object may lie on earlier ones
REFERENCE_SIZE = 128  # object radii in a Style are given for images of this size
MIN_RADIUS = 2.5


@dataclass(frozen=True)
class Style:
    """Appearance and layout parameters of one stain style.

    ``mode`` "absorb" renders bright-field light through stains (Beer-Lambert: RGB = 10**-OD with
    ``background`` / ``cell`` the stains' OD vectors); "emit" renders dark-field light emitted by
    the tissue (RGB = density * colour, ``background`` / ``cell`` colours).
    """

    name: str
    mode: str  # "absorb" or "emit"
    background: tuple[float, float, float]
    cell: tuple[float, float, float]
    bg_density: float
    cell_density: float
    fibres: float  # density of the fibre texture (0: none)
    speckle: float  # probability of a debris dot per pixel
    fg_fraction: tuple[float, float]  # range of the target foreground share
    radius: tuple[float, float]  # object radius range in pixels at REFERENCE_SIZE
    aspect: tuple[float, float]  # minor / major axis range
    irregularity: float  # amplitude of the boundary harmonics
    cluster: float  # probability that a new object is placed against an existing one
    texture: float  # amplitude of the chromatin texture inside objects
    rim: float  # > 0: darker rim (vesicular nucleus), < 0: darker centre
    membrane: float  # extra density on object boundaries; small, so touching cells blend
    blur: float  # Gaussian blur sigma in pixels
    noise: float  # standard deviation of the additive noise (RGB in 0..1)


STYLES: tuple[Style, ...] = (
    Style("he", "absorb", EOSIN, HEMATOXYLIN, 0.22, 0.85, 0.25, 0.002,
          (0.35, 0.5), (6.0, 10.0), (0.6, 1.0), 0.14, 0.6, 0.25, 0.3, 0.12, 0.7, 0.02),
    Style("darkfield", "emit", (0.35, 0.35, 0.5), (0.45, 0.95, 0.7), 0.12, 0.75, 0.0, 0.004,
          (0.25, 0.38), (5.0, 9.0), (0.55, 1.0), 0.1, 0.45, 0.3, 0.25, -0.15, 0.8, 0.03),
    Style("ihc", "absorb", HEMATOXYLIN, DAB, 0.1, 0.7, 0.1, 0.001,
          (0.3, 0.45), (8.0, 13.0), (0.5, 0.95), 0.2, 0.5, 0.35, -0.2, 0.2, 0.9, 0.025),
    Style("pale", "absorb", EOSIN, HEMATOXYLIN, 0.12, 0.3, 0.15, 0.001,
          (0.3, 0.45), (7.0, 12.0), (0.6, 1.0), 0.16, 0.6, 0.4, 0.2, 0.06, 1.2, 0.035),
)


@dataclass(frozen=True)
class ObjectType:
    """How an image's objects are shaped, on top of its style: radii scaled by ``radius_scale``,
    boundary harmonics by ``irregularity_scale``, and the minor / major axis range ``aspect`` (None:
    the style's)."""

    name: str
    radius_scale: float
    irregularity_scale: float
    aspect: tuple[float, float] | None

    def shape(self, style: Style) -> Style:
        """``style`` with its objects reshaped to this type."""
        return replace(style, radius=(style.radius[0] * self.radius_scale, style.radius[1] * self.radius_scale),
                       irregularity=style.irregularity * self.irregularity_scale, aspect=self.aspect or style.aspect)


OBJECT_TYPES: tuple[ObjectType, ...] = (
    ObjectType("round", 1.0, 1.0, None),
    ObjectType("elongated", 1.2, 1.0, (0.25, 0.45)),
    ObjectType("lobulated", 1.6, 3.5, (0.7, 1.0)),
)


@dataclass
class Layout:
    """Object geometry of one image.

    ``labels`` (H, W) int: 0 background, i > 0 object i (later objects cover earlier ones);
    ``rnorm`` (H, W) float: normalised radius inside the owning object (0 centre, 1 boundary);
    ``kind`` (N + 1,) int and ``shade`` (N + 1,) float: per-object kind and density factor
    (index 0 is the background).
    """

    labels: np.ndarray
    rnorm: np.ndarray
    kind: np.ndarray
    shade: np.ndarray


def synthesize(out: str | Path, n: int = 24, size: int = 128, seed: int = 0, classes: int = 2,
               style_weights: Mapping[str, float] | None = None,
               object_weights: Mapping[str, float] | None = None) -> Path:
    """Write ``n`` synthetic ``size`` x ``size`` images and masks under ``out``; return ``out``.

    Image ``i`` is ``out/images/syn-<i>.png`` (RGB uint8, (size, size, 3)) with its mask at
    ``out/masks/syn-<i>.png`` (uint8, (size, size)); ``out/styles.json`` and ``out/objects.json`` map
    stems to style and object type names. The weights (default: ``data.synthetic``'s defaults) give
    the share of images per style / object type name.
    """
    if n < 1 or size < 16 or classes < 2:
        raise ValueError(f"need n >= 1, size >= 16, classes >= 2; got {n=}, {size=}, {classes=}")
    defaults = SyntheticConfig()
    style_shares = shares(style_weights or defaults.style_weights, [s.name for s in STYLES], "style_weights")
    object_shares = shares(object_weights or defaults.object_weights, [t.name for t in OBJECT_TYPES],
                           "object_weights")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    root = np.random.SeedSequence(seed)
    assignment_rng = np.random.default_rng(root.spawn(1)[0])
    styles = [STYLES[k] for k in assign(assignment_rng, n, style_shares)]
    objects = [OBJECT_TYPES[k] for k in assign(assignment_rng, n, object_shares)]
    width = max(3, len(str(n - 1)))
    style_record, object_record = {}, {}
    for i, (style, kind, child) in enumerate(zip(styles, objects, root.spawn(n))):
        image, mask = render(np.random.default_rng(child), kind.shape(style), size, classes)
        stem = f"syn-{i:0{width}d}"
        Image.fromarray(image).save(out / "images" / f"{stem}.png")
        Image.fromarray(mask).save(out / "masks" / f"{stem}.png")
        style_record[stem], object_record[stem] = style.name, kind.name
    (out / "styles.json").write_text(json.dumps(style_record, indent=1) + "\n")
    (out / "objects.json").write_text(json.dumps(object_record, indent=1) + "\n")
    return out


def shares(weights: Mapping[str, float], names: list[str], key: str) -> np.ndarray:
    """(len(names),) the weights in the order of ``names`` (a name left out weighs 0); an unknown name
    or no positive weight fails naming ``data.synthetic.<key>``."""
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise ConfigError(f"data.synthetic.{key}: unknown name {unknown[0]!r} (valid: {', '.join(names)})")
    values = np.array([float(weights.get(name, 0.0)) for name in names])
    if (values < 0).any() or not (values > 0).any():
        raise ConfigError(f"data.synthetic.{key}: weights must not be negative and one must be positive")
    return values


def assign(rng: np.random.Generator, n: int, weights: np.ndarray) -> np.ndarray:
    """(n,) shuffled indices into ``weights``, each index about ``n x its share`` times (largest
    remainders); every positive weight appears at least once when ``n`` is at least their number."""
    share = n * weights / weights.sum()
    counts = np.floor(share).astype(int)
    if n >= (weights > 0).sum():
        counts = np.where(weights > 0, np.maximum(counts, 1), 0)
    while counts.sum() > n:
        counts[np.argmax(counts)] -= 1
    while counts.sum() < n:
        counts[np.argmax(share - counts)] += 1
    return rng.permutation(np.repeat(np.arange(len(weights)), counts))


def render(rng: np.random.Generator, style: Style, size: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One image (size, size, 3) uint8 and its mask (size, size) uint8 in the given style."""
    kinds = max(1, classes - 2)
    layout = place_objects(rng, style, size, kinds)
    ring = boundary_ring(layout.labels)
    cells = cell_density(rng, style, layout, ring, kinds)
    image = stain(rng, style, cells)
    return image, make_mask(layout, ring, classes)


def place_objects(rng: np.random.Generator, style: Style, size: int, kinds: int) -> Layout:
    """Drop objects, many against earlier ones, until the target foreground share is covered."""
    labels = np.zeros((size, size), np.int32)
    rnorm = np.ones((size, size))
    target = rng.uniform(*style.fg_fraction) * size * size
    scale = size / REFERENCE_SIZE
    centres: list[tuple[float, float, float]] = []
    kind, shade = [0], [0.0]
    covered = 0
    for _ in range(2000):
        if covered >= target:
            break
        k = int(rng.random() * kinds)
        radius = max(MIN_RADIUS, rng.uniform(*style.radius) * scale) * (1 + 0.3 * k / max(kinds - 1, 1))
        cy, cx = next_centre(rng, centres, radius, size, style.cluster)
        box, inside, rn = rasterize(rng, style, cy, cx, radius, size)
        if not inside.any() or (labels[box][inside] > 0).mean() > MAX_OVERLAP:
            continue
        covered += int((labels[box][inside] == 0).sum())
        labels[box][inside] = len(kind)
        rnorm[box][inside] = rn[inside]
        centres.append((cy, cx, radius))
        kind.append(k)
        shade.append(rng.uniform(0.85, 1.15) * (1 + 0.4 * k / max(kinds - 1, 1)))
    return Layout(labels, rnorm, np.array(kind), np.array(shade))


def next_centre(
    rng: np.random.Generator, centres: list[tuple[float, float, float]], radius: float, size: int, cluster: float
) -> tuple[float, float]:
    """Centre (y, x) of a new object: against a random earlier one with probability ``cluster``."""
    if centres and rng.random() < cluster:
        cy, cx, r = centres[rng.integers(len(centres))]
        angle = rng.uniform(0, 2 * np.pi)
        dist = (r + radius) * rng.uniform(0.75, 1.0)
        return cy + dist * np.sin(angle), cx + dist * np.cos(angle)
    cy, cx = rng.uniform(-0.05, 1.05, 2) * size
    return cy, cx


def rasterize(
    rng: np.random.Generator, style: Style, cy: float, cx: float, radius: float, size: int
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray]:
    """A randomly oriented irregular ellipse around (cy, cx), clipped to the image.

    Returns the bounding box (two slices), the (h, w) bool inside mask and the (h, w) normalised
    radius (< 1 inside). The boundary is ``1 + sum_k a_k cos(k phi + p_k)``, k = 2..10.
    """
    aspect = rng.uniform(*style.aspect)
    a, b = radius / np.sqrt(aspect), radius * np.sqrt(aspect)
    theta = rng.uniform(0, np.pi)
    harmonics = np.arange(2, 11)
    amps = style.irregularity * rng.normal(size=harmonics.size) / harmonics**1.3
    phases = rng.uniform(0, 2 * np.pi, harmonics.size)
    reach = a * (1 + np.abs(amps).sum()) + 1
    y0, y1 = max(int(cy - reach), 0), min(int(cy + reach) + 2, size)
    x0, x1 = max(int(cx - reach), 0), min(int(cx + reach) + 2, size)
    box = (slice(y0, max(y0, y1)), slice(x0, max(x0, x1)))
    yy, xx = np.mgrid[box]
    dy, dx = yy - cy, xx - cx
    u = (dx * np.cos(theta) + dy * np.sin(theta)) / a
    v = (-dx * np.sin(theta) + dy * np.cos(theta)) / b
    phi = np.arctan2(v, u)
    edge = 1 + (amps[:, None, None] * np.cos(harmonics[:, None, None] * phi + phases[:, None, None])).sum(0)
    rn = np.hypot(u, v) / np.maximum(edge, 0.5)
    return box, rn < 1, rn


def boundary_ring(labels: np.ndarray) -> np.ndarray:
    """(H, W) bool: object pixels next to another object or the background (3x3 neighbourhood)."""
    return (labels > 0) & (ndi.maximum_filter(labels, 3) != ndi.minimum_filter(labels, 3))


def cell_density(
    rng: np.random.Generator, style: Style, layout: Layout, ring: np.ndarray, kinds: int
) -> np.ndarray:
    """(H, W) stain density of the objects: per-object shade, chromatin texture, rim, membrane."""
    inside = layout.labels > 0
    chromatin = smooth_noise(rng, inside.shape, 0.8)
    rim = 1 + style.rim * (layout.rnorm**3 - 0.4)
    density = style.cell_density * layout.shade[layout.labels] * rim * (1 + style.texture * chromatin)
    density = density + style.membrane * style.cell_density * ring
    return np.where(inside, np.clip(density, 0, None), 0.0)


def stain(rng: np.random.Generator, style: Style, cells: np.ndarray) -> np.ndarray:
    """Render the (H, W) object density on a textured background into an (H, W, 3) uint8 image."""
    shape = cells.shape
    jitter = rng.uniform(0.85, 1.15, 2)
    background = np.asarray(style.background) * rng.uniform(0.92, 1.08, 3)
    foreground = np.asarray(style.cell) * rng.uniform(0.92, 1.08, 3)
    base = style.bg_density * jitter[0] * np.clip(1 + 0.4 * background_texture(rng, shape), 0, None)
    base = base + style.fibres * fibres(rng, shape[0])
    debris = ndi.gaussian_filter((rng.random(shape) < style.speckle).astype(float), 0.7) * 4
    amount = cells * jitter[1] + 0.5 * style.cell_density * debris
    layers = base[..., None] * background + amount[..., None] * foreground
    rgb = 10.0 ** -layers if style.mode == "absorb" else layers
    rgb = ndi.gaussian_filter(rgb, (style.blur, style.blur, 0))
    rgb = rgb + rng.normal(0, style.noise, rgb.shape)
    return np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """(H, W) Gaussian-filtered white noise with zero mean and unit standard deviation."""
    field = ndi.gaussian_filter(rng.standard_normal(shape), sigma)
    return (field - field.mean()) / (field.std() + 1e-12)


def background_texture(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) unit-variance mix of coarse and fine smooth noise."""
    coarse = smooth_noise(rng, shape, max(shape[0] / 10, 1.0))
    fine = smooth_noise(rng, shape, max(shape[0] / 40, 1.0))
    return 0.8 * coarse + 0.6 * fine


def fibres(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size) field in 0..1 of thin wavy fibres (random-walk polylines, blurred)."""
    count, steps = max(size // 8, 2), size
    angles = rng.uniform(0, 2 * np.pi, (count, 1)) + np.cumsum(rng.normal(0, 0.08, (count, steps)), axis=1)
    start = rng.uniform(0, size, (count, 1, 2))
    points = start + np.cumsum(0.7 * np.stack([np.sin(angles), np.cos(angles)], -1), axis=1)
    points = np.round(points).astype(int).reshape(-1, 2)
    points = points[((points >= 0) & (points < size)).all(1)]
    field = np.zeros((size, size))
    np.add.at(field, (points[:, 0], points[:, 1]), 1.0)
    return np.tanh(ndi.gaussian_filter(field, 0.8))


def make_mask(layout: Layout, ring: np.ndarray, classes: int) -> np.ndarray:
    """(H, W) uint8 mask: {0, 255} for two classes, else class ids (kinds, ring = classes - 1)."""
    inside = layout.labels > 0
    if classes == 2:
        return (inside * 255).astype(np.uint8)
    ids = np.where(inside, 1 + layout.kind[layout.labels], 0)
    ids[ring] = classes - 1
    return ids.astype(np.uint8)


def synthesize_slides(out: str | Path, n: int = 2, blocks: tuple[int, int] = (2, 3), block: int = 128,
                      blank_columns: int = 1, levels: int = 3, tile: int = 64, seed: int = 0,
                      classes: int = 2) -> Path:
    """Write ``n`` synthetic whole-slide images under ``out``; return ``out``.

    Slide ``i`` is ``out/slides/slide-<i>.tif``: a mosaic of ``blocks`` = (rows, columns) rendered
    ``block`` x ``block`` tiles in the bright-field styles, whose last ``blank_columns`` columns are
    blank glass (white), written as a tiled pyramidal TIFF with ``levels`` levels; its mask (class ids,
    {0, 255} when binary) is ``out/slide_masks/slide-<i>.tif`` at level 0. Seeded like :func:`synthesize`.
    """
    from activeseg.core.slides import write_pyramid

    out = Path(out)
    (out / "slides").mkdir(parents=True, exist_ok=True)
    (out / "slide_masks").mkdir(parents=True, exist_ok=True)
    bright = [s for s in STYLES if s.name != "darkfield"]
    rows, cols = blocks
    for i, child in enumerate(np.random.SeedSequence(seed).spawn(n)):
        rng = np.random.default_rng(child)
        image = np.full((rows * block, cols * block, 3), 255, np.uint8)
        mask = np.zeros((rows * block, cols * block), np.uint8)
        for r in range(rows):
            for c in range(cols - blank_columns):
                style = bright[int(rng.integers(len(bright)))]
                box = np.s_[r * block : (r + 1) * block, c * block : (c + 1) * block]
                image[box], mask[box] = render(rng, OBJECT_TYPES[0].shape(style), block, classes)
        write_pyramid(out / "slides" / f"slide-{i}.tif", image, levels, tile)
        write_pyramid(out / "slide_masks" / f"slide-{i}.tif", mask, 1, tile)
    return out
