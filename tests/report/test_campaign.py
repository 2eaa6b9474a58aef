"""The report's data, gathered from a workspace: the per-round table, the queried regions with the maps
their query stored, the accepted labels and the pre-annotation they are compared with, data quality (no
folder of the machine in it), the campaign at a glance."""

from __future__ import annotations

import math

import numpy as np

from activeseg.loop.oracle import ground_truth
from activeseg.metrics import METRICS
from activeseg.report.campaign import gather, rounds_text, without_folders
from activeseg.report.figures import DISAGREE, label_panel
from activeseg.workspace import Workspace
from activeseg.workspace.exchange.requests import context_box
from activeseg.workspace.query_maps import maps_path, read_query_maps
from tests.report.conftest import pre_annotation, requested_truth


def test_the_table_has_one_row_per_trained_round(campaign: Workspace) -> None:
    rows = gather(campaign).rows
    assert [r.round for r in rows] == [1, 2]
    one, two = rows
    trained = campaign.record(1).trained
    assert (one.labeled_pixels, one.val_dice, one.model_sha256) == (trained.revealed_pixels, trained.val_dice,
                                                                     trained.checkpoint_sha256)
    assert one.metrics == {m: campaign.record(1).evaluated.metrics[m] for m in METRICS}
    assert (one.annotator, one.approver, one.train_steps) == ("alice", "pi", trained.train_steps)
    assert one.wait_seconds is not None and one.wait_seconds > 0
    # round 2 waits for its labels: no test metrics, annotator, approver or wait yet
    assert (two.metrics, two.annotator, two.approver, two.wait_seconds) == ({}, None, None, None)
    # round 2 trained on round 1's labels too: each region's cost is the pixels it newly revealed
    assert two.labeled_pixels == one.labeled_pixels + sum(r.cost for r in campaign.record(1).queried.regions)


def test_each_queried_region_comes_with_its_context_maps_and_labels(campaign: Workspace) -> None:
    regions = gather(campaign).regions
    assert sorted(regions) == [1, 2]
    revoked = campaign.record(1).queried.regions[0].id
    assert [v.id for v in regions[2].views][-1] == revoked  # asked again: round 2's model did not choose it
    for n, views in ((n, r.views) for n, r in regions.items()):
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
            if n == 1:  # the annotator's masks: the ground truth of the region
                assert np.array_equal(view.label, ground_truth(campaign.dataset, region))
            else:
                assert view.label is None


def test_the_labels_are_compared_with_the_pre_annotation_that_was_exported(campaign: Workspace) -> None:
    regions = gather(campaign).regions
    request, truth = requested_truth(campaign, 1)
    changed = request.items[-1].id
    sent = pre_annotation(truth, changed)
    assert (regions[1].pre_annotation, regions[2].pre_annotation) == ("qupath", None)  # round 2: no labels yet
    for view in regions[1].views:
        assert np.array_equal(view.pre_annotation, sent[view.id])
        assert view.compared_prediction() is view.pre_annotation
        red = (label_panel(view) == DISAGREE).all(axis=2)
        y0, x0, y1, x1 = view.inner
        expected = np.zeros(red.shape, bool)
        expected[y0:y1, x0:x1] = sent[view.id] != truth[view.id]  # the flipped diagonal of the changed region
        assert np.array_equal(red, expected), view.id
        assert red.sum() == (min(y1 - y0, x1 - x0) if view.id == changed else 0)
    assert all(v.pre_annotation is None for v in regions[2].views)


def test_masks_handed_back_unchanged_are_marked(campaign: Workspace) -> None:
    regions = gather(campaign).regions
    ids = [r.id for r in campaign.record(1).queried.regions]
    changed = requested_truth(campaign, 1)[0].items[-1].id  # the request's last region (its order is by id)
    assert [v.unchanged for v in regions[1].views] == [i != changed for i in ids]
    assert regions[1].unchanged == len(ids) - 1 == len(campaign.record(1).labels_accepted.reviewed_unchanged)
    assert regions[2].unchanged is None and not any(v.unchanged for v in regions[2].views)  # no labels yet


def test_the_query_stores_its_maps_with_the_round(campaign: Workspace) -> None:
    assert maps_path(campaign.root, 1).relative_to(campaign.root).as_posix() == "query/maps/round-001.npz"
    assert set(read_query_maps(campaign.root, 1)) == {r.id for r in campaign.record(1).queried.regions}
    assert read_query_maps(campaign.root, 3) == {}  # a round whose query stored none
    # versioned by DVC as part of the query stage's output, not by git
    assert "query/maps" not in campaign.git("ls-files") and "path: query" in (campaign.root / "dvc.lock").read_text()


def test_data_quality_lists_validations_rejections_revocations_and_the_ledger_verdict(campaign: Workspace) -> None:
    quality = gather(campaign).quality
    assert quality.dataset["success"] is True and quality.dataset["reasons"] == []
    assert [(b["round"], b["success"]) for b in quality.batches] == [(1, True), (2, True)]
    folder, export, changed = quality.quarantined
    missing = min(r.id for r in campaign.record(1).queried.regions)  # the batch's first file, removed
    assert (folder["round"], folder["annotator"], export["round"], export["annotator"]) == (1, "alice", 1, "bob")
    assert any(reason.startswith(f"{missing}.png: no mask uploaded") for reason in folder["reasons"])
    # the export's reason is recorded with its file name only, not the folder it was imported from
    recorded = campaign.ledger.events(type="batch_rejected")[-1].data["reasons"]
    assert recorded == export["reasons"] == ["export.geojson: malformed JSON at line 1, column 2: "
                                             "Expecting property name enclosed in double quotes"]
    assert [q["quarantine"].split("/")[:2] for q in (folder, export)] == [["quarantine", "round-001"]] * 2
    # round 2's batch, changed in the store after staging: unstaged into the quarantine, its approval refused
    reason = changed["reasons"][0]
    assert (changed["round"], changed["annotator"], changed["by"]) == (2, "carol", "pi")
    assert reason.startswith("the staged batch no longer holds the bytes that were staged (") and "changed)" in reason
    [refused] = quality.refused
    assert (refused["round"], refused["approver"], refused["reason"], refused["flow_run"]) == (2, "pi", reason, None)
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
    assert glance["rounds"] == rounds_text(1, 3) == "1 of 3 closed"
    assert glance["labeled pixels"].startswith(f"{state.revealed_pixels():,} of {state.total_pixels():,}")
    assert glance["dataset"].startswith("synthetic: 10 images")
    assert glance["stop rule"] == "after 3 rounds; none holds"
    assert report.state == glance["state"] == "round 1 finished, round 2 not started"
    n = len(campaign.record(2).queried.regions)
    assert glance["open label requests"] == f"round 2: {n} regions, no batch staged"
    assert report.curve == [(1, campaign.record(1).evaluated.labeled_pixel_fraction,
                             campaign.record(1).evaluated.metrics["dice"])]


def test_rounds_started_past_the_plan_read_as_forced() -> None:
    assert [rounds_text(closed, 3) for closed in (0, 3)] == ["0 of 3 closed", "3 of 3 closed"]
    assert rounds_text(4, 3) == "4 rounds closed (3 planned, 1 forced past the plan)"
    assert rounds_text(6, 3) == "6 rounds closed (3 planned, 3 forced past the plan)"


def test_reasons_keep_the_file_name_of_an_absolute_path_only() -> None:
    assert without_folders(["/home/ann/exports/a.geojson: malformed JSON",
                            "rejected by pi: see '/tmp/x/b.xml' (or /c.png), not 3/4 of them",
                            "a.png: size 4x4, the region's in-image part is 32x32",
                            "/home/ann/round 1/c.xml: a space ends the path's folders"]) == [
        "a.geojson: malformed JSON",
        "rejected by pi: see 'b.xml' (or /c.png), not 3/4 of them",
        "a.png: size 4x4, the region's in-image part is 32x32",
        "round 1/c.xml: a space ends the path's folders"]  # what is left is relative
