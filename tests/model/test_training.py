import math

import numpy as np
import pytest
import torch

from activeseg.core.config import TrainConfig
from activeseg.core.labels import LabelState
from activeseg.model.network import load_checkpoint
from activeseg.loop.oracle import reveal_from_ground_truth
from activeseg.core.partition import Region
from activeseg.model.crops import CropCentres, sample_crop
from activeseg.model.losses import segmentation_loss
from activeseg.model.training import (lr_schedule, planned_steps, should_stop, train_model)


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
    for centre in [(stem, 0, 0), (stem, 15, 15), (stem, 8, 3)]:
        image, target, weight = sample_crop(state, tiny_dataset, centre, 32, 0.5)
        assert image.shape == (32, 32, 3) and target.shape == weight.shape == (32, 32)
        assert weight.sum() == 256 and set(np.unique(weight)) == {0.0, 1.0}  # the window is shifted into the image
    _, _, weight = sample_crop(state, tiny_dataset, (stem, 40, 40), 32, 0.5)  # window [24, 56)^2: none labeled
    assert weight.sum() == 0
    # pseudo-labels count with their weight
    state.set_pseudo(Region(stem, 32, 32, 64, 64), np.ones((32, 32), np.uint8), "m")
    _, target, weight = sample_crop(state, tiny_dataset, (stem, 48, 48), 32, 0.5)
    assert set(np.unique(weight)) == {0.5} and (target == 1).all()


def test_steps_follow_the_labeled_pixels_between_the_floor_and_the_cap():
    train = TrainConfig(passes=10, batch_size=4, crop=32, min_steps=5, max_steps=100)
    # ceil(10 x P / (4 x 32^2)) = ceil(P / 409.6)
    assert [planned_steps(p, train) for p in (1000, 4096, 10_000, 40_960, 1_000_000)] == [5, 10, 25, 100, 100]
    assert planned_steps(4097, train) == 11


def test_cosine_and_one_cycle_schedules_start_and_end_where_documented():
    def lrs(schedule: str, total: int) -> list[float]:
        """The learning rate of each of the ``total`` steps."""
        opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
        sched = lr_schedule(opt, TrainConfig(lr=0.01, schedule=schedule), total)
        seen = []
        for _ in range(total):
            seen.append(opt.param_groups[0]["lr"])
            opt.step(), sched.step()
        return seen

    cosine = lrs("cosine", 10)  # 0.01 x (1 + cos(pi t / 10)) / 2
    assert cosine[0] == pytest.approx(0.01) and cosine[5] == pytest.approx(0.005)
    assert cosine[9] == pytest.approx(0.005 * (1 + math.cos(0.9 * math.pi))) and cosine[9] < 0.0003
    assert all(a > b for a, b in zip(cosine, cosine[1:]))
    one_cycle = lrs("onecycle", 100)  # lr / 25 up to lr at step 29, then down to lr / 25 / 1e4
    assert one_cycle[0] == pytest.approx(0.01 / 25) and max(one_cycle) == pytest.approx(0.01)
    assert int(np.argmax(one_cycle)) == 29 and one_cycle[-1] == pytest.approx(0.01 / 25 / 1e4)


def test_early_stopping_after_patience_epochs_without_a_better_val_dice():
    assert not should_stop([0.1, 0.3, 0.2], 2)
    assert should_stop([0.1, 0.3, 0.2, 0.3], 2)  # equal is no better
    assert not should_stop([0.1, 0.3, 0.2, 0.31], 2)
    assert should_stop([0.5, 0.4], 1) and not should_stop([0.5, 0.4, 0.3, 0.2], 0)


def train_fixed(cfg, dataset, images: int, side: int, val_stems: list[str], out, steps: int, steps_per_epoch: int,
                patience: int):
    """Train for exactly ``steps`` planned steps on the top-left (side, side) of the first ``images`` images."""
    t = cfg.train
    t.min_steps = t.max_steps = steps
    t.steps_per_epoch, t.patience = steps_per_epoch, patience
    stems = dataset.stems[:images]
    state = LabelState.empty({s: (64, 64) for s in stems})
    reveal_from_ground_truth(state, dataset, [Region(s, 0, 0, side, side) for s in stems], 0)
    return train_model(cfg, dataset, state, val_stems, out, progress=False)


def test_training_stops_early_and_keeps_the_best_epoch(tiny_cfg, tiny_dataset, tmp_path):
    result = train_fixed(tiny_cfg, tiny_dataset, 4, 32, tiny_dataset.stems[8:], tmp_path, 12, 1, 2)
    vals = [h["val_dice"] for h in result.history]
    assert result.stop_epoch < 11 and len(vals) == result.stop_epoch + 1 == result.train_steps
    assert result.stop_epoch - result.best_epoch == 2 and result.val_dice == max(vals)
    assert should_stop(vals, 2) and not any(should_stop(vals[:k], 2) for k in range(1, len(vals)))


def test_crop_centres_are_drawn_in_proportion_to_labeled_pixels(tiny_dataset):
    a, b = tiny_dataset.stems[:2]
    state = LabelState.empty({a: (64, 64), b: (64, 64)})
    reveal_from_ground_truth(state, tiny_dataset, [Region(a, 0, 0, 10, 10), Region(b, 0, 0, 30, 10)], 0)
    rng = np.random.default_rng(0)
    centres = CropCentres.of(state, 0.0)
    draws = [centres.draw(rng) for _ in range(4000)]
    assert all(state.known[s][y, x] for s, y, x in draws)
    share_b = np.mean([s == b for s, _, _ in draws])  # 300 of the 400 labeled pixels: 0.75, sd 0.007
    assert abs(share_b - 0.75) < 0.025
    # half the crops on foreground: P(foreground) = 0.5 + 0.5 x (foreground share of the labeled pixels)
    foreground = (state.labels[a] * state.known[a]).astype(bool).sum() + (state.labels[b] * state.known[b]).astype(bool).sum()
    expected = 0.5 + 0.5 * foreground / 400
    oversampled = CropCentres.of(state, 0.5)
    hits = np.mean([state.labels[s][y, x] > 0 for s, y, x in (oversampled.draw(rng) for _ in range(4000))])
    assert 0 < foreground < 400 and abs(hits - expected) < 0.025


def test_tiny_training_lowers_the_loss_and_writes_a_checkpoint(tiny_cfg, tiny_dataset, tmp_path):
    result = train_fixed(tiny_cfg, tiny_dataset, 6, 64, tiny_dataset.stems[6:8], tmp_path, 48, 8, 0)
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0] and (result.train_steps, result.stop_epoch, len(losses)) == (48, 5, 6)
    assert result.val_dice == max(h["val_dice"] for h in result.history) and result.train_seconds > 0
    model, meta = load_checkpoint(result.checkpoint)
    assert meta["val_dice"] == result.val_dice and meta["epoch"] == result.best_epoch


def test_more_labeled_pixels_train_for_more_steps(tiny_cfg, tiny_dataset, tmp_path):
    t = tiny_cfg.train
    t.passes, t.min_steps, t.max_steps, t.steps_per_epoch, t.patience = 2.0, 1, 100, 5, 0
    stems = tiny_dataset.stems
    steps = []
    for n in (1, 6):  # 1 and 6 images of 64 x 64: ceil(2 x 4096 n / (4 x 32^2)) = 2 n
        state = LabelState.empty({s: (64, 64) for s in stems[:n]})
        reveal_from_ground_truth(state, tiny_dataset, [Region(s, 0, 0, 64, 64) for s in stems[:n]], 0)
        result = train_model(tiny_cfg, tiny_dataset, state, stems[8:], tmp_path / str(n), progress=False)
        steps.append((result.train_steps, [h["steps"] for h in result.history]))
    assert steps == [(2, [2]), (12, [5, 5, 2])]


def test_training_is_deterministic_by_seed(tiny_cfg, tiny_dataset, tmp_path):
    stems = tiny_dataset.stems
    state = LabelState.empty({s: (64, 64) for s in stems[:3]})
    reveal_from_ground_truth(state, tiny_dataset, [Region(s, 0, 0, 32, 32) for s in stems[:3]], 0)
    a = train_model(tiny_cfg, tiny_dataset, state, stems[8:], tmp_path / "a", seed=5, progress=False)
    b = train_model(tiny_cfg, tiny_dataset, state, stems[8:], tmp_path / "b", seed=5, progress=False)
    assert a.history == b.history
