import torch

from activeseg.model.network import EDConvNet, load_checkpoint, mc_mode, save_checkpoint


def test_shapes_and_descriptor():
    model = EDConvNet(in_channels=3, classes=2, width=4, depth=2)
    x = torch.randn(2, 3, 32, 48)
    features = model.encode(x)
    assert [f.shape[1:] for f in features] == [(4, 32, 48), (8, 16, 24), (16, 8, 12)]
    assert model(x).shape == (2, 2, 32, 48)
    assert model.descriptor(features).shape == (2, 16) and model.descriptor_dim == 16
    assert torch.allclose(model.descriptor(features), features[-1].mean(dim=(2, 3)))


def test_mc_mode_samples_dropout_but_freezes_batch_norm():
    torch.manual_seed(0)
    model = EDConvNet(1, 2, width=4, depth=2, dropout=0.5)
    mc_mode(model)
    assert model.dropout.training
    assert not any(m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        features = model.encode(x)
        a, b = model.decode(features), model.decode(features)
    assert not torch.equal(a, b)  # stochastic decoder
    assert torch.equal(model.encode(x)[-1], features[-1])  # deterministic encoder


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    model = EDConvNet(1, 3, width=4, depth=2, dropout=0.1)
    meta = {"in_channels": 1, "classes": 3, "width": 4, "depth": 2, "dropout": 0.1}
    save_checkpoint(model, tmp_path / "m.pt", meta)
    back, back_meta = load_checkpoint(tmp_path / "m.pt")
    assert back_meta == meta
    for (name, a), (_, b) in zip(model.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), name


def test_input_standardization_ignores_brightness_and_contrast():
    torch.manual_seed(0)
    model = EDConvNet(3, 2, width=4, depth=2).eval()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(model(x), model(0.5 * x + 0.3), atol=1e-4)
