"""Augmentation of a batch of training crops (``train.augment``), beyond the flips and 90-degree turns
of :mod:`activeseg.model.crops`, which are always on.

A batch is image (N, C, H, W) float in [0, 1], target (N, H, W) int64 class ids and weight (N, H, W)
float. Each transform has a strength ``s`` (0: off, and then the batch is returned untouched):

- geometric, on all three in one resampling: zoom ``exp(U(-s, s))``, rotation ``U(-s, s)`` degrees, and
  an elastic displacement of up to ``s`` pixels drawn on a coarse ``GRID`` x ``GRID`` grid and upsampled
  bicubically (as the U-Net paper, Ronneberger et al. 2015). The image is resampled bilinearly (reflected
  at the border), target and weight by their nearest pixel; a pixel whose source lies outside the crop
  gets weight 0.
- on the image only, in this order: stain in HED space (Tellez et al. 2019: the Ruifrok-Johnston matrix of
  ``skimage.color.rgb2hed``, negative densities kept; per stain channel a scale ``1 + U(-s, s)`` and a
  shift ``U(-s, s)``; RGB only),
  brightness ``+ U(-s, s)``, contrast ``x (1 + U(-s, s))`` about the crop's channel mean, gamma
  ``** exp(U(-s, s))``, Gaussian blur of sigma ``U(0, s)`` pixels, Gaussian noise of std ``U(0, s)``;
  then clipped to [0, 1].

Every draw is per sample and comes from a ``torch.Generator`` (:func:`draw`), for the whole global batch,
so a process of distributed training that keeps only its share (:meth:`Draws.take`) augments its
samples as one process would. Written in torch rather than kornia: benchmarks/augment_speed.py measured
it faster on a (8, 3, 64, 64) CPU batch (kornia resamples once per transform and smooths a full-size
noise field for its elastic transform), and kornia has no HED stain augmentation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from skimage.color import hed_from_rgb, rgb_from_hed

from activeseg.core.config import AugmentConfig
from activeseg.core.data import Dataset
from activeseg.core.image_kind import detect_preset

GRID = 5  # control points per side of the elastic displacement
GEOMETRIC = ("scale", "rotation", "elastic")
INTENSITY = ("stain", "brightness", "contrast", "gamma", "blur", "noise")
LOG_ADJUST = math.log(1e-6)  # skimage.color.separate_stains / combine_stains


def resolve(settings: AugmentConfig, dataset: Dataset) -> dict[str, float]:
    """Per transform, its strength (``auto``: the preset detected from ``dataset``'s images)."""
    preset = detect_preset(dataset).preset if settings.preset == "auto" else settings.preset
    return settings.strengths(preset)


def is_on(strengths: dict[str, float]) -> bool:
    return any(s > 0 for s in strengths.values())


@dataclass
class Draws:
    """The random parameters of N samples (leading dimension N)."""

    zoom: torch.Tensor  # (N,) log zoom
    angle: torch.Tensor  # (N,) degrees
    elastic: torch.Tensor  # (N, 2, GRID, GRID) pixels (x, y)
    stain_scale: torch.Tensor  # (N, 3)
    stain_shift: torch.Tensor  # (N, 3)
    brightness: torch.Tensor  # (N,)
    contrast: torch.Tensor  # (N,)
    gamma: torch.Tensor  # (N,) log gamma
    blur: torch.Tensor  # (N,) sigma in pixels
    noise: torch.Tensor  # (N, C, H, W) std times a standard normal

    def take(self, index: list[int]) -> Draws:
        """The draws of the samples ``index``."""
        return Draws(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


def uniform(shape: tuple[int, ...], s: float, gen: torch.Generator) -> torch.Tensor:
    """U(-s, s) of ``shape``."""
    return (torch.rand(shape, generator=gen) * 2 - 1) * s


def draw(strengths: dict[str, float], n: int, channels: int, side: int, gen: torch.Generator) -> Draws:
    """The parameters of ``n`` samples of (channels, side, side); every parameter is drawn whatever the
    strengths (a strength 0 draws zeros), so turning one transform on leaves the others' draws as they were."""
    s = strengths
    return Draws(
        zoom=uniform((n,), s["scale"], gen), angle=uniform((n,), s["rotation"], gen),
        elastic=uniform((n, 2, GRID, GRID), s["elastic"], gen),
        stain_scale=1 + uniform((n, 3), s["stain"], gen), stain_shift=uniform((n, 3), s["stain"], gen),
        brightness=uniform((n,), s["brightness"], gen), contrast=uniform((n,), s["contrast"], gen),
        gamma=uniform((n,), s["gamma"], gen), blur=torch.rand(n, generator=gen) * s["blur"],
        noise=torch.rand(n, 1, 1, 1, generator=gen) * s["noise"] * torch.randn(n, channels, side, side, generator=gen))


def sampling_grid(d: Draws, side: int) -> torch.Tensor:
    """(N, side, side, 2) source positions (x, y in [-1, 1], align_corners False) of each output pixel."""
    theta = torch.deg2rad(d.angle)
    cos, sin, zoom = torch.cos(theta), torch.sin(theta), torch.exp(-d.zoom)
    affine = torch.stack([torch.stack([cos * zoom, -sin * zoom, torch.zeros_like(cos)], 1),
                          torch.stack([sin * zoom, cos * zoom, torch.zeros_like(cos)], 1)], 1)
    grid = F.affine_grid(affine, [len(theta), 1, side, side], align_corners=False)
    shift = F.interpolate(d.elastic, size=(side, side), mode="bicubic", align_corners=True) * (2 / side)
    return grid + shift.permute(0, 2, 3, 1)


def geometric(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, d: Draws) -> tuple[torch.Tensor, ...]:
    """Image (N, C, H, W) bilinear, target and weight (N, H, W) nearest, through one sampling grid; weight
    0 where the source lies outside the crop."""
    grid = sampling_grid(d, x.shape[-1])
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    y = F.grid_sample(y[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    w = F.grid_sample(w[:, None], grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return x, y[:, 0].round().long(), w[:, 0]


def rgb_to_hed(x: torch.Tensor) -> torch.Tensor:
    """skimage.color.rgb2hed of (N, 3, H, W): stain densities (N, 3, H, W), but without its clamp of negative
    densities at 0, so that :func:`hed_to_rgb` gives back every colour, one outside the stains' span too."""
    optical = torch.log(x.clamp(min=1e-6)) / LOG_ADJUST
    return torch.einsum("nchw,cd->ndhw", optical, torch.as_tensor(hed_from_rgb, dtype=x.dtype))


def hed_to_rgb(hed: torch.Tensor) -> torch.Tensor:
    """skimage.color.hed2rgb of (N, 3, H, W) stain densities: RGB (N, 3, H, W) in [0, 1]."""
    optical = torch.einsum("nchw,cd->ndhw", hed * -LOG_ADJUST, torch.as_tensor(rgb_from_hed, dtype=hed.dtype))
    return torch.exp(-optical).clamp(0, 1)


def stain(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """HED stain augmentation (Tellez et al. 2019) of RGB (N, 3, H, W): each stain's density times
    ``scale`` (N, 3) plus ``shift`` (N, 3)."""
    return hed_to_rgb(rgb_to_hed(x) * scale[:, :, None, None] + shift[:, :, None, None])


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Each sample of (N, C, H, W) blurred with its own Gaussian of std ``sigma`` (N,) pixels (0: unchanged),
    separably, reflected at the border."""
    n, c, h, w = x.shape
    radius = max(1, math.ceil(3 * float(sigma.max())))
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-offsets**2 / (2 * sigma.clamp(min=1e-3)[:, None] ** 2))
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (N * C, K)
    planes = F.pad(x.reshape(1, n * c, h, w), (radius,) * 4, mode="reflect")
    planes = F.conv2d(planes, kernel[:, None, None, :], groups=n * c)
    planes = F.conv2d(planes, kernel[:, None, :, None], groups=n * c)
    return planes.reshape(n, c, h, w)


def intensity(x: torch.Tensor, s: dict[str, float], d: Draws) -> torch.Tensor:
    """The image transforms whose strength is above 0, in the module docstring's order, then a clip."""
    per_sample = (slice(None), None, None, None)
    if s["stain"] > 0:
        if x.shape[1] != 3:
            raise ValueError(f"train.augment.stain needs RGB images, these have {x.shape[1]} channel(s); set it to 0")
        x = stain(x, d.stain_scale, d.stain_shift)
    if s["brightness"] > 0:
        x = x + d.brightness[per_sample]
    if s["contrast"] > 0:
        mean = x.mean((2, 3), keepdim=True)
        x = (x - mean) * (1 + d.contrast[per_sample]) + mean
    if s["gamma"] > 0:
        x = x.clamp(0, 1) ** torch.exp(d.gamma[per_sample])
    if s["blur"] > 0:
        x = gaussian_blur(x, d.blur)
    if s["noise"] > 0:
        x = x + d.noise
    return x.clamp(0, 1)


def augment_batch(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, strengths: dict[str, float],
            d: Draws) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Image (N, C, H, W), target and weight (N, H, W) with the transforms of strength above 0 (module
    docstring); with every strength 0, the batch itself."""
    if any(strengths[name] > 0 for name in GEOMETRIC):
        x, y, w = geometric(x, y, w, d)
    if any(strengths[name] > 0 for name in INTENSITY):
        x = intensity(x, strengths, d)
    return x, y, w
