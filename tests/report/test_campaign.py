"""The report's data, gathered from a workspace: the per-round table, the queried regions with the maps
their query stored and the accepted labels, data quality, the campaign at a glance."""

from __future__ import annotations

import math

import numpy as np

from activeseg.loop.oracle import SIMULATED, ground_truth
from activeseg.metrics import METRICS
from activeseg.report.campaign import gather
from activeseg.workspace import Workspace
from activeseg.workspace.exchange import context_box
from activeseg.workspace.query_maps import maps_path, read_query_maps


def test_the_table_has_one_row_per_trained_round(campaign: Workspace) -> None:
    rows = gather(campaign).rows
    assert [r.round for r in rows] == [1, 2]
    one, two = rows
    trained = campaign.record(1).trained
    assert (one.labeled_pixels, one.val_dice, one.model_sha256) == (trained.revealed_pixels, trained.val_dice,
                                                                     trained.checkpoint_sha256)
    assert one.metrics == {m: campaign.record(1).evaluated.metrics[m] for m in METRICS}
    assert (one.annotator, one.approver, one.train_steps) == (SIMULATED, "pi", trained.train_steps)
    assert one.wait_seconds is not None and one.wait_seconds > 0
    # round 2 waits for its labels: no test metrics, annotator, approver or wait yet
    assert (two.metrics, two.annotator, two.approver, two.wait_seconds) == ({}, None, None, None)
    # round 2 trained on round 1's labels too: each region's cost is the pixels it newly revealed
    assert two.labeled_pixels == one.labeled_pixels + sum(r.cost for r in campaign.record(1).queried.regions)


def test_each_queried_region_comes_with_its_context_maps_and_labels(campaign: Workspace) -> None:
    regions = gather(campaign).regions
    assert sorted(regions) == [1, 2]
    revoked = campaign.record(1).queried.regions[0].id
    assert [v.id for v in regions[2]][-1] == revoked  # asked again: round 2's model did not choose it
    for n, views in regions.items():
        assert [v.id for v in views] == [r.id for r in campaign.record(n).queried.regions]
        for view in views:
            region = next(r.region() for r in campaign.record(n).queried.regions if r.id == view.id)
            sample = campaign.dataset.samples[region.stem]
            y0, x0, y1, x1 = context_box(region, sample.height, sample.width)
            assert view.image.shape == (y1 - y0, x1 - x0, 3) and view.image.dtype == np.uint8
            assert view.revoked == ((n, view.id) == (1, revoked))
            if (n, view.id) == (2, revoked):
                assert view.uncertainty is view.prediction is view.label is None
                continue
            assert view.uncertainty.shape == view.prediction.shape == view.image.shape[:2]
            assert 0 <= view.uncertainty.min() and view.uncertainty.max() <= math.log(2) + 1e-3
            assert set(np.unique(view.prediction)) <= {0, 1}
            iy0, ix0, iy1, ix1 = view.inner
            assert (iy0 + y0, ix0 + x0, iy1 + y0, ix1 + x0) == (region.y0, region.x0, region.y1, region.x1)
            if n == 1:  # the simulated annotator's masks: the ground truth of the region
                assert np.array_equal(view.label, ground_truth(campaign.dataset, region))
            else:
                assert view.label is None


def test_the_query_stores_its_maps_with_the_round(campaign: Workspace) -> None:
    assert maps_path(campaign.root, 1).relative_to(campaign.root).as_posix() == "query/maps/round-001.npz"
    assert set(read_query_maps(campaign.root, 1)) == {r.id for r in campaign.record(1).queried.regions}
    assert read_query_maps(campaign.root, 3) == {}  # a round whose query stored none
    # versioned by DVC as part of the query stage's output, not by git
    assert "query/maps" not in campaign.git("ls-files") and "path: query" in (campaign.root / "dvc.lock").read_text()


def test_data_quality_lists_validations_rejections_revocations_and_the_ledger_verdict(campaign: Workspace) -> None:
    quality = gather(campaign).quality
    assert quality.dataset["success"] is True and quality.dataset["reasons"] == []
    assert [(b["round"], b["success"]) for b in quality.batches] == [(1, True)]
    [rejected] = quality.quarantined
    missing = min(r.id for r in campaign.record(1).queried.regions)  # the batch's first file, removed
    assert (rejected["round"], rejected["annotator"]) == (1, "alice")
    assert any(reason.startswith(f"{missing}.png: no mask uploaded") for reason in rejected["reasons"])
    assert rejected["quarantine"].startswith("quarantine/round-001/")
    [revoked] = quality.revoked
    first = campaign.record(1).queried.regions[0].id
    assert (revoked["round"], revoked["regions"], revoked["by"], revoked["reason"]) == (1, [first], "pi",
                                                                                         "smudged outline")
    assert quality.verify.ok, quality.verify.message


def test_the_campaign_at_a_glance(campaign: Workspace) -> None:
    report = gather(campaign)
    glance = dict(report.glance)
    state = campaign.label_state()
    assert glance["strategy"] == campaign.cfg.query.strategy
    assert glance["rounds"] == "1 of 3 closed"
    assert glance["labeled pixels"].startswith(f"{state.revealed_pixels():,} of {state.total_pixels():,}")
    assert glance["dataset"].startswith("synthetic: 10 images")
    assert glance["stop rule"] == "after 3 rounds; none holds"
    assert report.state == glance["state"] == "round 1 finished, round 2 not started"
    n = len(campaign.record(2).queried.regions)
    assert glance["open label requests"] == f"round 2: {n} regions, no batch staged"
    assert report.curve == [(campaign.record(1).evaluated.labeled_pixel_fraction,
                             campaign.record(1).evaluated.metrics["dice"])]
