"""InfoVAE (Zhao et al. 2017, the MMD-VAE) over small crops of the pool's regions, for BSQ.

BSQ (Ozdemir et al. 2021, Sect. 2.3) trains an infoVAE on every image of the pool, labeled or not, and
queries in its latent space. Loss (Eq. 6): L = L_AE + ``mmd_weight`` x L_MMD, where L_AE is the mean
squared reconstruction error (the paper's l2 loss, averaged over pixels here) and L_MMD the biased
V-statistic estimate of

    MMD(q || p) = E_{z,z'~q}[k(z, z')] + E_{z,z'~p}[k(z, z')] - 2 E_{z~q, z'~p}[k(z, z')]

between the encoded batch q and as many draws from the standard normal prior p, with the Gaussian
kernel k(z, z') = exp(-||z - z'||^2 / (2 sigma^2)).

Decisions the paper leaves open or that we change for speed:
- Inputs: each region's crop (mirror-padded where it leaves the image, as everywhere) is resized to
  ``size`` x ``size`` (bilinear, antialiased; the paper uses 96 x 96 whole slices), then normalised
  image-wise to zero mean and unit standard deviation ("image-wise normalization"). The same function
  prepares the inputs at training and at query time (the reference code skips it at query time: a bug).
- The encoder is deterministic, as in Zhao et al.'s MMD-VAE: with an MMD prior term no sampling
  is needed, and the latent code of a sample is the encoder output.
- Kernel width: the paper writes sigma = 1 with n_lat = 200, where exp(-||z - z'||^2 / 2) vanishes for
  almost every pair of prior draws (||z - z'||^2 is about 2 n_lat). By default sigma^2 = latent_dim, so
  the kernel is exp(-1) at the typical distance of two prior draws; ``kernel_sigma2`` overrides it.
- Three stride-2 convolutions down and three transposed convolutions up (the paper has five blocks
  on 96 x 96), Adam with ``lr`` (the paper 5e-5 over many more steps), small defaults for speed.
- The model is reused until the pool changes: :func:`pool_key` hashes the region ids, the pixels of
  their images and the parameters; :func:`load_or_train` keeps one checkpoint per key on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from pydantic import ConfigDict
from torch import nn
from torch.nn import functional as F

from activeseg.core.config import InfoVAESettings
from activeseg.core.data import Dataset
from activeseg.core.partition import Region


class InfoVAEParams(InfoVAESettings):
    """Everything that defines a trained infoVAE (part of its cache key)."""

    model_config = ConfigDict(frozen=True)

    seed: int = 0

    @property
    def sigma2(self) -> float:
        return float(self.kernel_sigma2 if self.kernel_sigma2 is not None else self.latent_dim)


class InfoVAE(nn.Module):
    """Input and reconstruction (N, C, S, S) with S a multiple of 8; latent codes (N, latent_dim)."""

    def __init__(self, channels: int, params: InfoVAEParams):
        super().__init__()
        w, side = params.width, params.size // 8
        self.shape = (4 * w, side, side)
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, w, 4, 2, 1), nn.ReLU(inplace=True),
            nn.Conv2d(w, 2 * w, 4, 2, 1), nn.ReLU(inplace=True),
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1), nn.ReLU(inplace=True),
            nn.Flatten(),
            nn.Linear(4 * w * side * side, params.latent_dim),
        )
        self.decoder = nn.Sequential(
            nn.Linear(params.latent_dim, 4 * w * side * side), nn.ReLU(inplace=True),
            nn.Unflatten(1, self.shape),
            nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(w, channels, 4, 2, 1),
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)


def normalise(x: torch.Tensor) -> torch.Tensor:
    """Image-wise normalisation of (N, C, H, W): zero mean, unit std per sample.

    The std is floored at 1e-3 (pixels are in [0, 1]): a flat crop maps to about zero, not to its
    rounding noise blown up."""
    flat = x.flatten(1)
    mean = flat.mean(1).view(-1, 1, 1, 1)
    std = flat.std(1, unbiased=False).clamp_min(1e-3).view(-1, 1, 1, 1)
    return (x - mean) / std


def region_inputs(dataset: Dataset, regions: list[Region], size: int) -> np.ndarray:
    """(N, C, size, size) float32: each region's crop resized and normalised (training and query alike)."""
    out = np.zeros((len(regions), dataset.channels, size, size), np.float32)
    for i, region in enumerate(regions):
        part = torch.from_numpy(np.ascontiguousarray(dataset.region_pixels(region).transpose(2, 0, 1)))
        resized = F.interpolate(part[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[i] = normalise(resized)[0].numpy()
    return out


def gaussian_kernel(a: torch.Tensor, b: torch.Tensor, sigma2: float) -> torch.Tensor:
    """(n, d), (m, d) -> (n, m): exp(-||a_i - b_j||^2 / (2 sigma^2))."""
    sq = (a * a).sum(1, keepdim=True) + (b * b).sum(1) - 2 * a @ b.T
    return torch.exp(-sq.clamp_min(0) / (2 * sigma2))


def mmd(q: torch.Tensor, p: torch.Tensor, sigma2: float) -> torch.Tensor:
    """Biased estimate of Eq. 6 between samples q (n, d) and p (m, d)."""
    return (gaussian_kernel(q, q, sigma2).mean() + gaussian_kernel(p, p, sigma2).mean()
            - 2 * gaussian_kernel(q, p, sigma2).mean())


def train_infovae(x: np.ndarray, params: InfoVAEParams, device: torch.device) -> tuple[InfoVAE, list[float]]:
    """Train on prepared inputs (N, C, S, S); returns the model (eval mode) and the mean loss per epoch."""
    if x.ndim != 4 or x.shape[-1] != params.size or x.shape[-2] != params.size:
        raise ValueError(f"expected inputs (N, C, {params.size}, {params.size}), got {x.shape}")
    gen = torch.Generator().manual_seed(params.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(params.seed)
        model = InfoVAE(x.shape[1], params)
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=params.lr)
    data = torch.from_numpy(x)
    history = []
    for _ in range(params.epochs):
        losses = []
        for idx in torch.randperm(len(data), generator=gen).split(params.batch_size):
            batch = data[idx].to(device)
            z = model.encode(batch)
            prior = torch.randn(len(idx), params.latent_dim, generator=gen).to(device)
            loss = F.mse_loss(model.decode(z), batch) + params.mmd_weight * mmd(z, prior, params.sigma2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        history.append(float(np.mean(losses)))
    return model.eval(), history


@torch.no_grad()
def encode(model: InfoVAE, x: np.ndarray, device: torch.device, batch_size: int = 256) -> np.ndarray:
    """Latent codes (N, latent_dim) of prepared inputs (N, C, S, S)."""
    model.eval()
    codes = [model.encode(torch.from_numpy(x[i : i + batch_size]).to(device)).float().cpu().numpy()
             for i in range(0, len(x), batch_size)]
    return np.concatenate(codes) if codes else np.zeros((0, model.encoder[-1].out_features), np.float32)


def pool_key(dataset: Dataset, regions: list[Region], params: InfoVAEParams) -> str:
    """sha256 of the region ids, the pixels of their images and the parameters: the model's cache key."""
    h = hashlib.sha256()
    h.update(json.dumps({"params": params.model_dump(), "regions": [r.id for r in regions]}).encode())
    for stem in sorted({r.stem for r in regions}):
        image = np.ascontiguousarray(dataset.image(stem))
        h.update(f"{stem}:{image.shape}:{image.dtype}".encode())
        h.update(image.tobytes())
    return h.hexdigest()


def load_or_train(dataset: Dataset, regions: list[Region], params: InfoVAEParams, device: torch.device,
                  cache_dir: Path | None) -> tuple[InfoVAE, np.ndarray]:
    """The pool's infoVAE (from ``cache_dir`` when a model of the same key is there) and its inputs.

    Without ``cache_dir`` the model is trained on every call.
    """
    x = region_inputs(dataset, regions, params.size)
    path = Path(cache_dir) / f"infovae-{pool_key(dataset, regions, params)}.pt" if cache_dir else None
    if path is not None and path.exists():
        blob = torch.load(path, map_location=device, weights_only=True)
        model = InfoVAE(blob["channels"], params).to(device)
        model.load_state_dict(blob["state_dict"])
        return model.eval(), x
    model, _ = train_infovae(x, params, device)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save({"state_dict": model.state_dict(), "channels": x.shape[1]}, tmp)
        tmp.replace(path)
    return model, x
