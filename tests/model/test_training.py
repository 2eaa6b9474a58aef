import numpy as np
import torch

from activeseg.core.labels import LabelState
from activeseg.model.network import load_checkpoint
from activeseg.loop.oracle import reveal_from_ground_truth
from activeseg.core.partition import Region
from activeseg.model.training import sample_crop, segmentation_loss, train_model


def test_loss_is_small_for_a_confident_correct_prediction_and_ignores_unknown_pixels():
    target = torch.tensor([[[0, 1], [1, 0]]])
    logits = torch.stack([(1 - target) * 20.0, target * 20.0], dim=1).float()
    weight = torch.ones(1, 2, 2)
    assert segmentation_loss(logits, target, weight, 1.0) < 1e-3
    wrong = logits.flip(1)
    assert segmentation_loss(wrong, target, weight, 1.0) > 10
    # a wrong pixel with weight 0 does not count
    mixed = logits.clone()
    mixed[0, :, 0, 0] = mixed[0, :, 0, 0].flip(0)
    weight[0, 0, 0] = 0
    assert segmentation_loss(mixed, target, weight, 1.0) < 1e-3


def test_training_crops_weight_only_revealed_pixels(tiny_dataset):
    stem = tiny_dataset.stems[0]
    state = LabelState.empty({stem: (64, 64)})
    reveal_from_ground_truth(state, tiny_dataset, [Region(stem, 0, 0, 16, 16)], 0)
    rng = np.random.default_rng(0)
    for _ in range(5):
        image, target, weight = sample_crop(state, tiny_dataset, Region(stem, 0, 0, 16, 16), 32, 0.5, rng)
        assert image.shape == (32, 32, 3) and target.shape == weight.shape == (32, 32)
        assert 0 < weight.sum() <= 256 and set(np.unique(weight)) <= {0.0, 1.0}
    # pseudo-labels count with their weight
    state.set_pseudo(Region(stem, 32, 32, 64, 64), np.ones((32, 32), np.uint8), "m")
    _, target, weight = sample_crop(state, tiny_dataset, Region(stem, 32, 32, 64, 64), 32, 0.5, rng)
    assert set(np.unique(weight)) <= {0.0, 0.5} and (weight == 0.5).sum() > 0


def test_tiny_training_lowers_the_loss_and_writes_a_checkpoint(tiny_cfg, tiny_dataset, tmp_path):
    cfg = tiny_cfg
    cfg.train.epochs, cfg.train.samples_per_epoch = 6, 32
    stems = tiny_dataset.stems
    state = LabelState.empty({s: (64, 64) for s in stems[:6]})
    reveal_from_ground_truth(state, tiny_dataset, [Region(s, 0, 0, 64, 64) for s in stems[:6]], 0)
    result = train_model(cfg, tiny_dataset, state, stems[6:8], tmp_path, progress=False)
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0]
    assert result.val_dice == max(h["val_dice"] for h in result.history)
    model, meta = load_checkpoint(result.checkpoint)
    assert meta["val_dice"] == result.val_dice and meta["epoch"] == result.best_epoch


def test_training_is_deterministic_by_seed(tiny_cfg, tiny_dataset, tmp_path):
    stems = tiny_dataset.stems
    state = LabelState.empty({s: (64, 64) for s in stems[:3]})
    reveal_from_ground_truth(state, tiny_dataset, [Region(s, 0, 0, 32, 32) for s in stems[:3]], 0)
    a = train_model(tiny_cfg, tiny_dataset, state, stems[8:], tmp_path / "a", seed=5, progress=False)
    b = train_model(tiny_cfg, tiny_dataset, state, stems[8:], tmp_path / "b", seed=5, progress=False)
    assert a.history == b.history
