"""Evaluation of a model on a split with the metrics of ``activeseg.metrics``."""

from __future__ import annotations

import numpy as np
import torch

from activeseg.core.data import Dataset
from activeseg.core.partition import Region
from activeseg.model.inference import predict_mask
from activeseg.metrics import binary_metrics, mean_metrics, per_class_metrics
from activeseg.model.network import EDConvNet


def evaluate_model(model: EDConvNet, dataset: Dataset, stems: list[str], device: torch.device) -> dict:
    """``{"per_image": {unit: metrics}, "mean": metrics}``; binary metrics on foreground = class > 0,
    plus ``per_class`` for more than two classes. The units are :meth:`Dataset.eval_units`: each image
    whole, each whole-slide image as its tissue tiles (a slide is never predicted whole; HD95 and MSD
    are then per tile, and the mean is over images and tiles)."""
    per_image, per_class = {}, {}
    for name, region in dataset.eval_units(stems).items():
        pred, gt = predict_mask(model, dataset.region_pixels(region), device), dataset.region_mask(region)
        per_image[name] = binary_metrics(pred, gt)
        if dataset.classes > 2:
            per_class[name] = {str(c): m for c, m in per_class_metrics(pred, gt, dataset.classes).items()}
    result = {"per_image": per_image, "mean": mean_metrics(per_image)}
    if per_class:
        result["per_class"] = per_class
    return result


def region_prediction(model: EDConvNet, dataset: Dataset, region: Region, device: torch.device) -> np.ndarray:
    """(h, w) uint8 class ids over the region's in-image part: the argmax of one deterministic forward pass
    (dropout off) over the region's box, mirror-padded past the image as the query reads it."""
    s = dataset.samples[region.stem]
    ys, xs = region.clipped(s.height, s.width)
    return predict_mask(model, dataset.region_pixels(region), device)[: ys.stop - ys.start, : xs.stop - xs.start]


def predicted_classes(model: EDConvNet, dataset: Dataset, stems: list[str], device: torch.device) -> list[int]:
    """The class ids the model predicts on at least one pixel of the images ``stems``, ascending: a
    single class means the model collapsed to it."""
    found = set()
    for region in dataset.eval_units(stems).values():
        found.update(np.unique(predict_mask(model, dataset.region_pixels(region), device)).tolist())
    return sorted(found)


def foreground_fraction(dataset: Dataset, stems: list[str]) -> float:
    """Mean foreground share over the evaluation units of ``stems``."""
    return float(np.mean([(dataset.region_mask(r) > 0).mean() for r in dataset.eval_units(stems).values()]))
