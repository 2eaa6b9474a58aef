"""Encoder-decoder CNN of FocAnnot Fig. 2, with spatial dropout for MC dropout.

The input is standardized per sample and channel. Blocks of two 3x3 conv + BN + ReLU; max-pool down; bilinear up; skip connections; 1x1 head. Dropout
(``nn.Dropout2d``) sits at the bottleneck and after every decoder block, never in the encoder: the
encoder is deterministic, so MC-dropout inference encodes a batch once and samples only the decoder.
The descriptor of a sample is the channel-wise average of the deepest encoder block (the bottleneck),
the FocAnnot descriptor and the "image descriptor" of suggestive annotation.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def standardize(x: torch.Tensor, floor: float = 0.05) -> torch.Tensor:
    """Per sample and channel: zero mean, unit standard deviation (floored, so that a flat crop is not
    turned into amplified noise). Makes stain and brightness differences between images and styles
    irrelevant to the first layer. (N, C, H, W) -> (N, C, H, W)."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    std = x.std(dim=(2, 3), keepdim=True).clamp_min(floor)
    return (x - mean) / std


class EDConvNet(nn.Module):
    """Input (N, C_in, H, W) with H, W multiples of ``2**depth``; output logits (N, classes, H, W)."""

    def __init__(self, in_channels: int, classes: int, width: int = 16, depth: int = 3, dropout: float = 0.2):
        super().__init__()
        self.depth = depth
        widths = [width * 2**i for i in range(depth + 1)]
        self.encoder = nn.ModuleList(
            [conv_block(in_channels, widths[0])] + [conv_block(widths[i - 1], widths[i]) for i in range(1, depth + 1)]
        )
        self.decoder = nn.ModuleList(
            [conv_block(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(depth))]
        )
        self.dropout = nn.Dropout2d(dropout)
        self.head = nn.Conv2d(widths[0], classes, 1)

    @property
    def descriptor_dim(self) -> int:
        return self.encoder[-1][3].out_channels

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of every encoder level; the last one is the bottleneck (N, D, H/2^d, W/2^d)."""
        features = [self.encoder[0](standardize(x))]
        for block in self.encoder[1:]:
            features.append(block(F.max_pool2d(features[-1], 2)))
        return features

    def decode(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Logits (N, classes, H, W); stochastic when the dropout module is in train mode."""
        x = self.dropout(features[-1])
        for block, skip in zip(self.decoder, reversed(features[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = self.dropout(block(torch.cat([x, skip], dim=1)))
        return self.head(x)

    @staticmethod
    def descriptor(features: list[torch.Tensor]) -> torch.Tensor:
        """Channel-wise average pooling of the bottleneck: (N, D)."""
        return features[-1].mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def build_model(in_channels: int, classes: int, width: int, depth: int, dropout: float) -> EDConvNet:
    return EDConvNet(in_channels, classes, width, depth, dropout)


def mc_mode(model: nn.Module) -> None:
    """Dropout in train mode, batch norm (and everything else) in eval mode."""
    model.eval()
    for module in model.modules():
        if isinstance(module, (nn.Dropout, nn.Dropout2d)):
            module.train()


def pick_device(name: str = "auto", threads: int = 0) -> torch.device:
    """The torch device named by ``train.device``; ``threads`` > 0 also sets torch's CPU threads
    (``train.threads``; 0 leaves torch's default)."""
    if threads:
        torch.set_num_threads(threads)
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is cuda but no CUDA device is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def save_checkpoint(model: EDConvNet, path, meta: dict) -> None:
    """State dict plus plain metadata (shapes of the net), loadable with ``weights_only=True``."""
    torch.save({"state_dict": model.state_dict(), "meta": meta}, path)


def load_checkpoint(path, device: torch.device | str = "cpu") -> tuple[EDConvNet, dict]:
    blob = torch.load(path, map_location=device, weights_only=True)
    meta = blob["meta"]
    model = build_model(meta["in_channels"], meta["classes"], meta["width"], meta["depth"], meta["dropout"])
    model.load_state_dict(blob["state_dict"])
    return model.to(device), meta
