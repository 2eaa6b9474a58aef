"""Evaluation of a model on a split with the metrics of ``activeseg.metrics``."""

from __future__ import annotations

import numpy as np
import torch

from activeseg.core.data import Dataset
from activeseg.model.inference import predict_mask
from activeseg.metrics import binary_metrics, mean_metrics, per_class_metrics
from activeseg.model.network import EDConvNet


def evaluate_model(model: EDConvNet, dataset: Dataset, stems: list[str], device: torch.device) -> dict:
    """``{"per_image": {stem: metrics}, "mean": metrics}``; binary metrics on foreground = class > 0,
    plus ``per_class`` for more than two classes."""
    per_image, per_class = {}, {}
    for stem in stems:
        pred, gt = predict_mask(model, dataset.image(stem), device), dataset.mask(stem)
        per_image[stem] = binary_metrics(pred, gt)
        if dataset.classes > 2:
            per_class[stem] = {str(c): m for c, m in per_class_metrics(pred, gt, dataset.classes).items()}
    result = {"per_image": per_image, "mean": mean_metrics(per_image)}
    if per_class:
        result["per_class"] = per_class
    return result


def predicted_classes(model: EDConvNet, dataset: Dataset, stems: list[str], device: torch.device) -> list[int]:
    """The class ids the model predicts on at least one pixel of the images ``stems``, ascending: a
    single class means the model collapsed to it."""
    found = set()
    for stem in stems:
        found.update(np.unique(predict_mask(model, dataset.image(stem), device)).tolist())
    return sorted(found)


def foreground_fraction(dataset: Dataset, stems: list[str]) -> float:
    return float(np.mean([(dataset.mask(s) > 0).mean() for s in stems]))
