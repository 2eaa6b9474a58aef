import numpy as np
import pytest
import torch

from activeseg.model.inference import (
    RegionReduction, batch_masks, mc_dropout_scores, pad_to_multiple, predict_mask, region_generator,
)
from activeseg.model.network import EDConvNet, FoldedDecoder, dropout_masks
from activeseg.core.partition import partition_image


def naive_scores(model, x, masks):
    """The plain module (``decode`` with the masks) with all T passes kept: the textbook definitions."""
    model.eval()
    with torch.no_grad():
        features = model.encode(x)
        probs = torch.stack([torch.softmax(model.decode(features, [m[t] for m in masks]), 1)
                             for t in range(len(masks[0]))])  # (T, N, C, H, W)
    mean = probs.mean(0)
    ent = lambda p: -(p * torch.log(p + 1e-12)).sum(1)  # noqa: E731
    entropy = ent(mean).mean(dim=(1, 2))
    mean_sq = torch.stack([(p - mean) ** 2 for p in probs]).mean(0)
    variance = mean_sq.mean(1).mean(dim=(1, 2))
    bald = (ent(mean) - torch.stack([ent(p) for p in probs]).mean(0)).mean(dim=(1, 2))
    return entropy.numpy(), variance.numpy(), bald.numpy(), features[-1].mean(dim=(2, 3)).numpy()


def trained_looking(model: EDConvNet) -> EDConvNet:
    """Batch-norm statistics and affine terms away from their (0, 1) start, so that folding them matters."""
    generator = torch.Generator().manual_seed(5)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            c = module.num_features
            module.running_mean.copy_(torch.randn(c, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(c, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(c, generator=generator) * 0.3)  # > 0: no dead ReLU
    return model


def test_streaming_reductions_match_the_definitions(tiny_dataset):
    """The fused scorer (folded decoder, vectorized reductions) against the plain module and definitions."""
    torch.manual_seed(0)
    model = trained_looking(EDConvNet(3, 2, width=4, depth=2, dropout=0.3))
    stem = tiny_dataset.stems[0]
    regions = partition_image(stem, 64, 64, 32, 0.5)[:4]
    scores = mc_dropout_scores(model, tiny_dataset, regions, passes=5, batch_size=4, device=torch.device("cpu"),
                               seed=3)
    image = torch.from_numpy(tiny_dataset.image(stem).transpose(2, 0, 1))
    x = torch.stack([image[:, r.y0:r.y1, r.x0:r.x1] for r in regions])
    entropy, variance, bald, desc = naive_scores(model, x, batch_masks(model, [r.id for r in regions], 5, 3))
    np.testing.assert_allclose(scores.entropy, entropy, rtol=1e-5)
    np.testing.assert_allclose(scores.variance, variance, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(scores.bald, bald, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(scores.descriptors, desc, rtol=1e-5)
    assert (scores.variance > 0).all() and (scores.bald >= -1e-7).all()


def test_folded_decoder_is_the_module_decoder():
    torch.manual_seed(0)
    model = trained_looking(EDConvNet(3, 3, width=4, depth=2, dropout=0.5)).eval()
    features = model.encode(torch.rand(2, 3, 16, 16))
    masks = [m[0] for m in batch_masks(model, ["a", "b"], 1, 0)]
    assert [m.shape for m in masks] == [(2, 16), (2, 8), (2, 4)] and model.dropout_channels == [16, 8, 4]
    decoder = FoldedDecoder(model)
    with torch.no_grad():
        torch.testing.assert_close(decoder(decoder.batch_terms(features), masks),
                                   model.decode(features, masks), rtol=1e-5, atol=1e-5)


def test_dropout_masks_drop_whole_channels_at_rate_p_and_rescale():
    masks = dropout_masks(torch.Generator().manual_seed(0), 200, [30, 20], 0.25)
    assert [m.shape for m in masks] == [(200, 30), (200, 20)]
    values = torch.cat(masks, dim=1)
    assert set(values.unique().tolist()) == {0.0, torch.tensor(4 / 3).item()}
    assert (values == 0).float().mean().item() == pytest.approx(0.25, abs=0.01)  # 10000 draws: sd 0.004
    assert all(m.eq(1).all() for m in dropout_masks(torch.Generator(), 3, [4], 0.0))


def test_a_region_scores_the_same_in_any_batch_and_order(tiny_dataset):
    """Dropout masks come from (seed, region id): [a, b, c, d] together == [d, b] and [c, a] apart."""
    torch.manual_seed(0)
    model = EDConvNet(3, 2, width=4, depth=2, dropout=0.3)
    a, b, c, d = partition_image(tiny_dataset.stems[0], 64, 64, 32, 0.0)
    score = lambda regions, seed=7: mc_dropout_scores(model, tiny_dataset, regions, passes=4,  # noqa: E731
                                                      batch_size=4, device=torch.device("cpu"), seed=seed)
    together, db, ca = score([a, b, c, d]), score([d, b]), score([c, a])
    for name in ("entropy", "variance", "bald", "descriptors"):
        apart = dict(zip(db.ids + ca.ids, [*getattr(db, name), *getattr(ca, name)]))
        assert [apart[i].tolist() for i in together.ids] == getattr(together, name).tolist()
    assert score([a, b]).bald.tolist() == together.bald[:2].tolist()
    assert score([a, b], seed=8).bald.tolist() != together.bald[:2].tolist()
    assert region_generator(7, a.id).initial_seed() != region_generator(7, b.id).initial_seed()


def test_no_dropout_means_no_epistemic_uncertainty(tiny_dataset):
    model = EDConvNet(3, 2, width=4, depth=2, dropout=0.0)
    regions = partition_image(tiny_dataset.stems[0], 64, 64, 32, 0.0)
    scores = mc_dropout_scores(model, tiny_dataset, regions, passes=4, batch_size=2, device=torch.device("cpu"),
                               keep_maps={regions[0].id})
    assert np.allclose(scores.variance, 0, atol=1e-12) and np.allclose(scores.bald, 0, atol=1e-6)
    assert 0 < scores.entropy.min() <= scores.entropy.max() <= np.log(2) + 1e-6
    maps = scores.maps[regions[0].id]
    assert maps["mean_prob"].shape == (2, 32, 32) and maps["entropy"].shape == (32, 32)
    assert list(scores.maps) == [regions[0].id]


def test_padded_regions_are_scored_on_in_image_pixels(tiny_dataset):
    """A patch that reaches past the border is reduced over its in-image part only."""
    model = EDConvNet(3, 2, width=4, depth=2, dropout=0.0)
    # 64 px, l = 40: a full patch at 0, then one at 40 missing 16 < 20 px -> mirror-padded
    regions = partition_image(tiny_dataset.stems[0], 64, 64, 40, 0.0)
    assert [(r.y0, r.x0, r.y1, r.x1) for r in regions][-1] == (40, 40, 80, 80)
    scores = mc_dropout_scores(model, tiny_dataset, regions, passes=1, batch_size=8, device=torch.device("cpu"),
                               keep_maps={r.id for r in regions})
    shapes = [scores.maps[r.id]["entropy"].shape for r in regions]
    assert shapes == [(40, 40), (40, 24), (24, 40), (24, 24)]
    assert np.allclose([scores.maps[r.id]["entropy"].mean() for r in regions], scores.entropy)


def test_top_reduction_is_the_mean_of_the_highest_share_of_pixels():
    scores = torch.arange(10, dtype=torch.float32).reshape(2, 5)  # 0 .. 9
    assert RegionReduction()(scores) == 4.5
    assert RegionReduction("top", 0.2)(scores) == 8.5  # the top 2: 9, 8
    assert RegionReduction("top", 0.25)(scores) == 8.0  # ceil(2.5) = 3 pixels: 9, 8, 7
    assert RegionReduction("top", 0.01)(scores) == 9.0  # at least one pixel
    assert RegionReduction("top", 1.0)(scores) == 4.5
    assert RegionReduction("top", 0.3)(torch.tensor([[0.5, 0.1], [0.5, 0.2]])) == 0.5  # ties: 2 of 4 pixels
    with pytest.raises(ValueError, match="top_fraction must be in"):
        RegionReduction("top", 0.0)


def test_the_reduction_applies_to_every_score_and_hook(tiny_dataset):
    """Regions scored with ``top`` get the top-q mean of the same maps; a hook's score is reduced too."""
    torch.manual_seed(0)
    model = EDConvNet(3, 2, width=4, depth=2, dropout=0.3)
    regions = partition_image(tiny_dataset.stems[0], 64, 64, 40, 0.0)  # 40 x 40, 40 x 24, 24 x 40, 24 x 24
    top = RegionReduction("top", 0.05)
    scores = mc_dropout_scores(model, tiny_dataset, regions, passes=3, batch_size=8, device=torch.device("cpu"),
                               keep_maps={r.id for r in regions}, reduction=top,
                               hooks={"double": lambda maps: 2 * maps.variance})
    for i, r in enumerate(regions):
        maps = scores.maps[r.id]
        for name, reduced in (("entropy", scores.entropy), ("variance", scores.variance), ("bald", scores.bald),
                              ("double", scores.extra["double"])):
            values = np.sort(maps[name].ravel())[::-1]
            assert reduced[i] == pytest.approx(values[: int(np.ceil(0.05 * values.size))].mean(), rel=1e-5)
        np.testing.assert_allclose(maps["double"], 2 * maps["variance"], rtol=1e-6)
    assert (scores.entropy >= np.array([scores.maps[r.id]["entropy"].mean() for r in regions])).all()


def test_predict_mask_handles_sizes_not_multiple_of_the_depth():
    model = EDConvNet(1, 2, width=4, depth=2)
    mask = predict_mask(model, np.random.default_rng(0).random((30, 37, 1), dtype=np.float32), torch.device("cpu"))
    assert mask.shape == (30, 37) and mask.dtype == np.uint8
    assert pad_to_multiple(torch.zeros(1, 1, 30, 37), 4).shape == (1, 1, 32, 40)
