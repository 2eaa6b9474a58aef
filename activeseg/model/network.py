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


STD_FLOOR = 0.05
"""The least standard deviation :func:`standardize` divides by."""


def standardize(x: torch.Tensor, floor: float = STD_FLOOR) -> torch.Tensor:
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

    def encode(self, x: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> list[torch.Tensor]:
        """Feature maps of every encoder level; the last one is the bottleneck (N, D, H/2^d, W/2^d).
        ``stats``: the (mean, std) (N, C, 1, 1) to standardize with instead of x's own (tiled prediction
        passes the whole image's, so that a tile is seen as in the whole image)."""
        features = [self.encoder[0](standardize(x) if stats is None else (x - stats[0]) / stats[1])]
        for block in self.encoder[1:]:
            features.append(block(F.max_pool2d(features[-1], 2)))
        return features

    @property
    def dropout_channels(self) -> list[int]:
        """The channels at each dropout site of :meth:`decode`, in order: the bottleneck, then each decoder block."""
        return [self.descriptor_dim] + [block[3].out_channels for block in self.decoder]

    def decode(self, features: list[torch.Tensor], masks: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Logits (N, classes, H, W); stochastic when the dropout module is in train mode. ``masks``: one
        (N, C) channel multiplier per dropout site (:attr:`dropout_channels`), applied instead of the module."""
        masks = masks or [None] * (len(self.decoder) + 1)
        x = self._drop(features[-1], masks[0])
        for block, skip, mask in zip(self.decoder, reversed(features[:-1]), masks[1:]):
            x = self._drop(block(torch.cat([upsample(x, skip), skip], dim=1)), mask)
        return self.head(x)

    def _drop(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Spatial dropout of (N, C, H, W): the module's, or the given (N, C) channel multiplier."""
        return self.dropout(x) if mask is None else x * mask[:, :, None, None]

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


def dropout_masks(generator: torch.Generator, passes: int, channels: list[int], p: float) -> list[torch.Tensor]:
    """One sample's spatial-dropout multipliers for ``passes`` MC passes, drawn from ``generator``: per
    dropout site a (T, C) tensor of 0 (dropped, probability ``p``) and 1 / (1 - p) (kept), as
    ``nn.Dropout2d`` in train mode scales, in one draw of T x sum(C) uniforms."""
    keep = torch.rand(passes, sum(channels), generator=generator) >= p
    return list((keep / (1 - p)).split(channels, dim=1))


def fold_batch_norm(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of one convolution equal to ``conv`` (no bias) then ``norm`` in eval mode."""
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    return conv.weight * scale[:, None, None, None], norm.bias - norm.running_mean * scale


class FoldedDecoder:
    """:meth:`EDConvNet.decode` with explicit masks and batch norm in eval mode, in fewer operations per MC
    pass (the same function up to float rounding):
    - each batch norm is folded into its convolution;
    - the first convolution of each decoder block, over cat(upsampled u, skip s), is split by input
      channels, conv(cat(u, s)) = conv_u(u) + conv_s(s), and conv_s(s) (a quarter of the decoder's
      multiply-adds: 9 w^2 of 9 (4 w^2) per pixel at a level of width w) is computed once per batch;
    - the bottleneck is upsampled once per batch: spatial dropout, a factor per channel, commutes with it;
    - maps and weights are channels-last: bilinear upsampling measured 4-6x and the convolutions 1.2-1.5x
      faster so on the CPU (torch 2.13, 2 threads), and it is the layout CUDA's mixed precision prefers.
    """

    def __init__(self, model: EDConvNet):
        self.blocks = []
        for block in model.decoder:
            w1, b1 = fold_batch_norm(block[0], block[1])
            w2, b2 = fold_batch_norm(block[3], block[4])
            up = w1.shape[1] - w1.shape[0]  # the skip has as many channels as the block's output
            self.blocks.append((channels_last(w1[:, :up]), channels_last(w1[:, up:]), b1.detach(),
                                channels_last(w2), b2.detach()))
        self.head = (channels_last(model.head.weight), model.head.bias.detach())

    def batch_terms(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The passes' common part of a batch: the bottleneck upsampled to the first decoder level, and
        conv_s(skip) + folded bias of each decoder block, deepest first (N, C_l, H_l, W_l)."""
        skips = [channels_last(skip) for skip in reversed(features[:-1])]
        terms = [F.conv2d(skip, w_skip, bias, padding=1) for (_, w_skip, bias, _, _), skip in zip(self.blocks, skips)]
        return upsample(channels_last(features[-1]), skips[0]), terms

    def __call__(self, batch_terms: tuple[torch.Tensor, list[torch.Tensor]], masks: list[torch.Tensor]) -> torch.Tensor:
        """One MC pass: logits (N, classes, H, W) from the :meth:`batch_terms` and one (N, C) multiplier per
        dropout site (:attr:`EDConvNet.dropout_channels`)."""
        x, skips = batch_terms
        x = x * masks[0][:, :, None, None]
        for level, ((w_up, _, _, w2, b2), skip, mask) in enumerate(zip(self.blocks, skips, masks[1:])):
            if level:
                x = upsample(x, skip)
            x = F.relu_(F.conv2d(x, w_up, padding=1).add_(skip))
            x = F.relu_(F.conv2d(x, w2, b2, padding=1)).mul_(mask[:, :, None, None])
        return F.conv2d(x, *self.head)


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """A detached 4-d tensor in channels-last memory format (the same values)."""
    return x.detach().contiguous(memory_format=torch.channels_last)


def upsample(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) bilinearly resized to the height and width of ``like``, as :meth:`EDConvNet.decode` does."""
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


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
