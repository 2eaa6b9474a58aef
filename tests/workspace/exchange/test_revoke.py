"""Corrections: `labels revoke` records the revocation, leaves the revoked labels out of the training label
state from then on, returns the regions to the open request or the pool, and keeps history and `verify`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from activeseg.cli.main import main
from activeseg.core.pool import unlabeled
from activeseg.loop.oracle import ground_truth
from activeseg.workspace import Workspace, WorkspaceError
from tests.workspace.test_workspace import label_round, round_one, ws  # noqa: F401  (fixtures)


def expected_known(ws: Workspace, revoked: set[tuple[int, str]]) -> dict[str, np.ndarray]:
    """The known pixels computed by hand: every accepted region of every round, less the revoked ones."""
    known = {s: np.zeros((ws.dataset.samples[s].height, ws.dataset.samples[s].width), bool)
             for s in ws.split()["train"]}
    for n, _ in ws.records.accepted():
        for item in ws.record(n).requested():
            if (n, item.id) not in revoked:
                region = item.region()
                ys, xs = region.clipped(*known[region.stem].shape)
                known[region.stem][ys, xs] = True
    return known


def check_state(ws: Workspace, revoked: set[tuple[int, str]]) -> None:
    """The workspace's label state is exactly the hand-computed one, its labels the ground truth."""
    state = ws.label_state()
    known = expected_known(ws, revoked)
    assert state.revealed_pixels() == sum(int(k.sum()) for k in known.values())
    for stem, mask in known.items():
        assert np.array_equal(state.known[stem], mask), stem
        assert np.array_equal(state.labels[stem][mask], ws.dataset.mask(stem)[mask]), stem


def test_revoked_regions_leave_training_and_are_candidates_again(ws: Workspace, capsys: pytest.CaptureFixture) -> None:
    label_round(ws, 1)
    ws.evaluate(1)
    tags = ws.git("tag", "-l").split()
    files_at_tag = ws.git("ls-tree", "-r", "--name-only", "round-001").split()
    batch = ws.record(1).labels_accepted
    ids = [r.id for r in ws.record(1).queried.regions]
    assert len(ids) >= 2
    gone = ids[:1]
    before = ws.label_state().revealed_pixels()
    check_state(ws, set())

    result = ws.revoke(1, "pi", "stain artefact mislabeled", gone)

    assert result["regions"] == gone and result["by"] == "pi" and result["returned_to"] is None
    state = ws.label_state()
    check_state(ws, {(1, i) for i in gone})
    assert result["revoked_pixels"] == before - state.revealed_pixels() > 0
    event = ws.ledger.last("labels_revoked", 1)
    assert event.actor == "pi" and event.data["reason"] == "stain artefact mislabeled"
    assert event.data["regions"] == gone and event.data["batch_sha256"] == batch.batch_sha256
    assert event.data["annotator"] == "simulated-oracle"
    # candidates again for the next query: every revoked region with pixels no other region revealed
    regions = {r.id: r.region() for r in ws.record(1).queried.regions}
    candidates = {r.id for r in unlabeled(ws.regions(), state)}
    uncovered = {i for i in gone if state.new_pixels(regions[i]) > 0}
    assert uncovered and uncovered <= candidates
    # committed on its own, history linear, nothing deleted: the label files stay, the tag still has them
    assert ws.git("status", "--porcelain") == ""
    assert ws.git("rev-list", "--count", "--merges", "HEAD").strip() == "0"
    assert ws.git("rev-list", "-n", "1", "round-001").strip() == ws.git("rev-parse", "HEAD~1").strip()
    assert ws.git("tag", "-l").split() == tags
    assert ws.git("ls-tree", "-r", "--name-only", "round-001").split() == files_at_tag
    assert all((ws.root / "labels" / "round-001" / f"{i}.png").is_file() for i in ids)
    revoked = json.loads(ws.git("show", "HEAD:labels/revoked.json"))
    assert revoked[0]["regions"] == gone and revoked[0]["by"] == "pi" and revoked[0]["round"] == 1
    assert ws.verify().ok
    # the audit of a revoked region shows it accepted, then revoked
    capsys.readouterr()
    assert main(["audit", "--sample", gone[0], "--workspace", str(ws.root), "--json"]) == 0
    types = [e["type"] for e in json.loads(capsys.readouterr().out)]
    assert types.index("labels_committed") < types.index("labels_revoked")
    assert "labels_approved" in types
    # the next round trains on the state without them
    trained = ws.train(2)
    assert trained["revealed_pixels"] == state.revealed_pixels()
    # the rest of the batch can be revoked later, but no region twice
    rest = ws.revoke(1, "pi", "whole batch suspect")
    assert rest["regions"] == ids[1:]
    check_state(ws, {(1, i) for i in ids})
    with pytest.raises(WorkspaceError, match="every label of the batch was revoked already"):
        ws.revoke(1, "pi", "again")
    assert ws.verify().ok


def test_revoked_regions_return_to_the_open_request(ws: Workspace) -> None:
    label_round(ws, 1)
    ws.evaluate(1)
    ws.train(2)
    ws.query(2)
    asked = [r.id for r in ws.record(2).queried.regions]
    gone = [r.id for r in ws.record(1).queried.regions if r.id not in asked][:1]
    assert gone
    result = ws.revoke(1, "pi", "wrong class", gone)
    assert result["returned_to"] == 2 and result["returned"] == gone
    record = ws.record(2)
    assert [r.id for r in record.queried.regions] == asked + gone
    manifest = json.loads(ws.store.get_bytes("requests/round-002/manifest.json"))
    # the request holds a control (query.control_fraction), so it lists its regions by id, the returned one too
    assert record.queried.controls and [r["id"] for r in manifest["regions"]] == sorted(asked + gone)
    published = ws.ledger.last("request_published", 2)
    assert published.data["returned"] == gone and published.data["manifest_sha256"] == record.queried.manifest_sha256
    # the annotator answers the whole request: the region is known again, from round 2
    label_round(ws, 2)
    check_state(ws, {(1, gone[0])})
    state = ws.label_state()
    region = next(r.region() for r in record.queried.regions if r.id == gone[0])
    ys, xs = region.clipped(*state.shapes[region.stem])
    assert state.known[region.stem][ys, xs].all()
    assert np.array_equal(state.labels[region.stem][ys, xs], ground_truth(ws.dataset, region))
    assert any(h["round"] == 2 and h["region"]["id"] == gone[0] for h in state.history)
    assert ws.verify().ok


def test_refusals(ws: Workspace, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(WorkspaceError, match="round 7: no such round"):
        ws.revoke(7, "pi", "x")
    with pytest.raises(WorkspaceError, match="round 1: no batch was accepted"):
        ws.revoke(1, "pi", "x")
    ws.simulate_labels(1)
    with pytest.raises(WorkspaceError, match="round 1: a batch is staged"):
        ws.revoke(1, "pi", "x")
    ws.approve(1, "pi")
    one = ws.record(1).queried.regions[0].id
    with pytest.raises(WorkspaceError, match="not regions of its batch: nope_y0_x0_32x32"):
        ws.revoke(1, "pi", "x", [one, "nope_y0_x0_32x32"])
    with pytest.raises(WorkspaceError, match="reason is required"):
        ws.revoke(1, "pi", " ")
    events = len(ws.ledger.events())
    ws.revoke(1, "pi", "x", [one])
    assert len(ws.ledger.events()) == events + 1
    with pytest.raises(WorkspaceError, match=f"already revoked: {one}"):
        ws.revoke(1, "pi", "x", [one])
    assert main(["labels", "revoke", "--round", "1", "--by", "pi", "--reason", "x", "--regions", one,
                 "--workspace", str(ws.root)]) == 2
    assert "already revoked" in capsys.readouterr().err
    assert len(ws.ledger.events()) == events + 1
    # the initial set (round 0) can be revoked too, by the command
    initial = ws.record(0).initial.regions[0].id
    assert main(["labels", "revoke", "--round", "0", "--by", "pi", "--reason", "bad seed label", "--regions",
                 initial, "--workspace", str(ws.root)]) == 0
    assert ws.ledger.last("labels_revoked", 0).data["regions"] == [initial]
    assert ws.verify().ok
