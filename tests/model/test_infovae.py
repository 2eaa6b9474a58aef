import math

import numpy as np
import pytest
import torch

from activeseg.model import infovae
from activeseg.model.infovae import (InfoVAEParams, encode, gaussian_kernel, load_or_train, mmd, normalise, pool_key,
                               region_inputs, train_infovae)
from activeseg.core.partition import Region

TINY = InfoVAEParams(size=16, latent_dim=3, width=4, epochs=2, batch_size=8)


def test_gaussian_kernel_and_mmd_match_hand_values():
    a = torch.tensor([[0.0, 0.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    # sigma^2 = 0.5: exp(-d^2 / 1)
    assert torch.allclose(gaussian_kernel(a, b, 0.5), torch.tensor([[math.exp(-1), math.exp(-4)]]))
    q, p = torch.tensor([[0.0]]), torch.tensor([[1.0]])
    # Eq. 6: k(q,q) + k(p,p) - 2 k(q,p) = 2 - 2 exp(-1 / (2 sigma^2)) with sigma^2 = 0.5
    assert mmd(q, p, 0.5).item() == pytest.approx(2 - 2 * math.exp(-1))
    same = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    assert mmd(same, same, 3.0).item() == pytest.approx(0.0, abs=1e-6)


def test_kernel_width_defaults_to_the_latent_dimension():
    assert InfoVAEParams(latent_dim=7).sigma2 == 7.0
    assert InfoVAEParams(latent_dim=7, kernel_sigma2=1.0).sigma2 == 1.0


def test_image_wise_normalisation():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    y = normalise(x)
    assert torch.allclose(y.flatten(1).mean(1), torch.zeros(2), atol=1e-5)
    assert torch.allclose(y.flatten(1).std(1, unbiased=False), torch.ones(2), atol=1e-5)
    assert torch.allclose(normalise(torch.full((1, 1, 4, 4), 0.7)), torch.zeros(1, 1, 4, 4), atol=1e-4)


def test_region_inputs_are_resized_and_normalised(tiny_dataset):
    stem = tiny_dataset.stems[0]
    regions = [Region(stem, 0, 0, 32, 32), Region(stem, 0, 0, 64, 64), Region(stem, 48, 48, 80, 80)]
    x = region_inputs(tiny_dataset, regions, 16)
    assert x.shape == (3, tiny_dataset.channels, 16, 16) and x.dtype == np.float32
    assert np.allclose(x.reshape(3, -1).mean(1), 0, atol=1e-5)
    assert np.allclose(x.reshape(3, -1).std(1), 1, atol=1e-4)


def test_params_are_checked():
    with pytest.raises(ValueError, match="multiple of 8"):
        InfoVAEParams(size=30)
    with pytest.raises(ValueError, match="latent_dim"):
        InfoVAEParams(latent_dim=0)


def test_training_is_seeded_and_lowers_the_loss():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 1, 16, 16)).astype(np.float32)
    x[:12] += np.linspace(-2, 2, 16, dtype=np.float32)  # two kinds of inputs
    params = InfoVAEParams(size=16, latent_dim=3, width=4, epochs=15, batch_size=8, lr=3e-3)
    a, history = train_infovae(x, params, torch.device("cpu"))
    b, _ = train_infovae(x, params, torch.device("cpu"))
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert history[-1] < history[0]
    z = encode(a, x, torch.device("cpu"), batch_size=5)
    assert z.shape == (24, 3) and np.allclose(z, encode(b, x, torch.device("cpu")), atol=1e-6)


def test_pool_key_changes_with_regions_pixels_and_params(tiny_dataset):
    regions = [Region(s, 0, 0, 32, 32) for s in tiny_dataset.stems[:3]]
    key = pool_key(tiny_dataset, regions, TINY)
    assert key == pool_key(tiny_dataset, list(regions), InfoVAEParams(**vars(TINY)))
    assert key != pool_key(tiny_dataset, regions[:2], TINY)
    assert key != pool_key(tiny_dataset, regions, InfoVAEParams(size=16, latent_dim=4, width=4, epochs=2))
    tiny_dataset.image(regions[0].stem)[0, 0, 0] += 0.5  # same ids, other pixels
    assert key != pool_key(tiny_dataset, regions, TINY)


def test_the_pool_model_is_trained_once_and_then_loaded(tiny_dataset, tmp_path, monkeypatch):
    regions = [Region(s, 0, 0, 32, 32) for s in tiny_dataset.stems[:4]]
    device = torch.device("cpu")
    first, x = load_or_train(tiny_dataset, regions, TINY, device, tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("infovae-*.pt"))) == 1

    def no_training(*args, **kwargs):
        raise AssertionError("the cached model should have been loaded")

    monkeypatch.setattr(infovae, "train_infovae", no_training)
    second, x2 = load_or_train(tiny_dataset, regions, TINY, device, tmp_path / "cache")
    assert np.array_equal(x, x2)
    assert np.array_equal(encode(first, x, device), encode(second, x, device))
    with pytest.raises(AssertionError, match="cached"):  # another pool: a new model is needed
        load_or_train(tiny_dataset, regions[:3], TINY, device, tmp_path / "cache")
