import numpy as np
import pytest
import torch

from activeseg.core.config import load_config
from activeseg.core.partition import Region
from activeseg.model.network import build_model, standardize
from activeseg.model.pretrain import (mask_cells, masked_input, pretrain_model, reconstruction_loss,
                                      region_embeddings, transfer)
from tests.conftest import TINY


def test_mask_hides_exactly_the_ratio_of_whole_cells():
    mask = mask_cells(3, 8, 2, 0.25, torch.Generator().manual_seed(0))
    assert mask.shape == (3, 1, 8, 8) and mask.dtype == torch.bool
    cells = mask[:, 0, ::2, ::2]
    assert cells.sum(dim=(1, 2)).tolist() == [4, 4, 4]  # round(0.25 x 16) cells each
    assert torch.equal(mask[:, 0], cells.repeat_interleave(2, 1).repeat_interleave(2, 2))  # whole 2 x 2 cells
    assert not torch.equal(mask[0], mask[1])


def test_hidden_pixels_get_the_crop_mean_and_only_they_count_in_the_loss():
    x = torch.arange(2 * 16, dtype=torch.float32).view(1, 2, 4, 4)
    mask = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    mask[..., :2, :2] = True
    masked = masked_input(x, mask)
    assert torch.equal(masked[..., 2:, :], x[..., 2:, :]) and torch.equal(masked[..., :2, 2:], x[..., :2, 2:])
    assert torch.equal(masked[0, :, 0, 0], x.mean(dim=(2, 3))[0])
    output = standardize(x).clone()
    assert reconstruction_loss(output, x, mask) == 0
    output[..., 3, 3] += 5  # a visible pixel: no loss
    assert reconstruction_loss(output, x, mask) == 0
    output[..., 0, 0] += 2  # a hidden pixel of 4 x 2 channels
    assert reconstruction_loss(output, x, mask).item() == pytest.approx(4 * 2 / 8)


def test_pretraining_lowers_the_reconstruction_loss(tiny_dataset):
    cfg = load_config(None, [*TINY, "pretrain.steps=30", "pretrain.batch_size=4", "pretrain.lr=0.01"])
    regions = [Region(stem, 0, 0, 64, 64) for stem in tiny_dataset.stems[:6]]
    result = pretrain_model(cfg, tiny_dataset, regions, torch.device("cpu"))
    assert len(result.losses) == 30
    assert np.mean(result.losses[-5:]) < 0.8 * np.mean(result.losses[:5])


def test_transfer_loads_every_weight_but_the_head_and_embeddings_have_unit_norm(tiny_dataset):
    source, target = build_model(3, 3, 4, 2, 0.2), build_model(3, 2, 4, 2, 0.2)
    transfer(target, source.state_dict())
    assert torch.equal(target.encoder[0][0].weight, source.encoder[0][0].weight)
    assert torch.equal(target.decoder[-1][3].weight, source.decoder[-1][3].weight)
    assert target.head.weight.shape == (2, 4, 1, 1)
    with pytest.raises(ValueError, match="does not fit"):
        transfer(build_model(3, 2, 8, 2, 0.2), source.state_dict())
    regions = [Region(tiny_dataset.stems[0], 0, 0, 32, 32), Region(tiny_dataset.stems[1], 16, 8, 48, 40)]
    vectors = region_embeddings(source, tiny_dataset, regions, torch.device("cpu"))
    assert vectors.shape == (2, source.descriptor_dim)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
