"""The segmentation loss: weighted cross entropy + ``dice_weight`` x (1 - soft Dice over the foreground
classes, weighted the same way), built from sums that add up over samples, so the loss of a global
batch split across processes is the loss of the whole batch (:func:`global_batch_loss`)."""

from __future__ import annotations

import torch
from torch import distributed as dist
from torch.nn import functional as F


def loss_sums(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The sums the loss is made of, additive over samples: (2 + 2 (C - 1),) = weighted CE sum, weight
    sum, soft-Dice intersections and denominators of classes 1..C-1. logits (N, C, H, W); target,
    weight (N, H, W)."""
    ce = (F.cross_entropy(logits, target, reduction="none") * weight).sum()
    probs = torch.softmax(logits, dim=1)[:, 1:]
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].float()
    w = weight[:, None]
    inter = (w * probs * onehot).sum(dim=(0, 2, 3))
    denom = (w * probs).sum(dim=(0, 2, 3)) + (w * onehot).sum(dim=(0, 2, 3))
    return torch.cat([ce[None], weight.sum()[None], inter, denom])


def loss_of_sums(sums: torch.Tensor, dice_weight: float) -> torch.Tensor:
    """Weighted CE + dice_weight x (1 - soft Dice) from :func:`loss_sums`."""
    inter, denom = sums[2:].chunk(2)
    soft_dice = ((2 * inter + 1.0) / (denom + 1.0)).mean()
    return sums[0] / sums[1].clamp_min(1.0) + dice_weight * (1 - soft_dice)


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, dice_weight: float) -> torch.Tensor:
    """Weighted CE + dice_weight x (1 - soft Dice). logits (N, C, H, W); target, weight (N, H, W)."""
    return loss_of_sums(loss_sums(logits, target, weight), dice_weight)


def global_batch_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, dice_weight: float,
                      world: int) -> tuple[torch.Tensor, float]:
    """(what to backpropagate, the loss of the global batch) for this process's share of it (shapes as
    :func:`segmentation_loss`). The sums of every rank are all-reduced; only this rank's part carries a
    gradient, scaled by ``world`` because DDP averages the gradients of the ranks: the averaged gradient
    is that of the global batch's loss. With ``world`` 1 it is :func:`segmentation_loss`."""
    sums = loss_sums(logits, target, weight)
    total = sums.detach().clone()
    if world > 1:
        dist.all_reduce(total)
    loss = loss_of_sums(sums - sums.detach() + total, dice_weight)
    return world * loss, loss.item()
