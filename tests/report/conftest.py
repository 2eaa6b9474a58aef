"""A small campaign for the report's tests: round 1 closed (after a rejected folder batch and a rejected
QuPath export, both from folders beside the workspace; its labels then came back through QuPath, all but
the last region handed back as the pre-annotation unchanged), round 2 queried and waiting for labels
(its first batch changed in the store after staging, so its approval was refused and the batch
quarantined); then one region of round 1 revoked, which adds it to round 2's open request."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from activeseg.core.partition import Region
from activeseg.loop.oracle import ground_truth
from activeseg.workspace import ApprovalRefused, BatchRejected, Workspace
from activeseg.workspace.exchange.formats import qupath
from activeseg.workspace.exchange.formats.common import Request
from activeseg.workspace.exchange.formats.service import build_request, export_round, import_round
from tests.workspace.test_workspace import SETTINGS, write_good_batch
from tests.people import enrol


@pytest.fixture(scope="package")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """The campaign described in the module docstring; tests only read it."""
    parent = tmp_path_factory.mktemp("report")
    ws = Workspace.init(parent / "ws", "synthetic", overrides=SETTINGS)
    enrol(ws.root)
    ws.train(1)
    ws.query(1)
    bad = write_good_batch(ws, parent / "bad-batch")
    sorted(bad.iterdir())[0].unlink()  # one mask missing: the batch is quarantined
    with pytest.raises(BatchRejected):
        ws.submit(1, bad, "alice")
    (parent / "broken").mkdir()
    (parent / "broken" / "export.geojson").write_text("{")  # rejected: its reason names the file
    with pytest.raises(BatchRejected):
        import_round(ws, 1, "qupath", parent / "broken" / "export.geojson", "bob")
    request, truth = requested_truth(ws, 1)
    sent = pre_annotation(truth, request.items[-1].id)
    export_round(ws, 1, "qupath", parent / "sent", prediction=lambda item: sent[item.id])
    qupath.export(request, truth, parent / "back")  # the last region corrected, the others as they were sent
    import_round(ws, 1, "qupath", parent / "back", "alice")
    ws.approve(1, "pi")
    ws.evaluate(1)
    ws.train(2)
    ws.query(2)
    ws.submit(2, write_good_batch(ws, parent / "round-2", 2), "carol")  # changed in the store after staging
    changed = sorted(i.key for i in ws.store.list(f"staged/round-002/{ws.record(2).staged.batch_sha256}/files/"))[0]
    ws.store.put_bytes(changed, b"changed")
    with pytest.raises(ApprovalRefused):
        ws.approve(2, "pi")
    ws.revoke(1, "pi", "smudged outline", regions=[ws.record(1).queried.regions[0].id])  # asked again in round 2
    return ws


def requested_truth(ws: Workspace, n: int) -> tuple[Request, dict[str, np.ndarray]]:
    """Round ``n``'s request as the formats see it and each region's ground truth (its in-image part)."""
    request = build_request(ws, n)
    return request, {item.id: ground_truth(ws.dataset, Region(item.stem, *item.box)) for item in request.items}


def pre_annotation(truth: dict[str, np.ndarray], changed: str) -> dict[str, np.ndarray]:
    """The prediction exported for round 1: the truth, but for region ``changed`` its diagonal flipped."""
    return {**truth, changed: truth[changed] ^ np.eye(*truth[changed].shape, dtype=np.uint8)}


def data_uris_removed(html: str) -> str:
    """The page without its embedded images (their base64 may hold any short string by chance)."""
    from activeseg.report.page import DATA_URI

    return DATA_URI.sub("data:", html)


def machine_paths(ws: Workspace) -> list[str]:
    """Absolute paths of the machine that must not appear in a report of ``ws``."""
    return [str(ws.root), str(ws.root.parent), str(Path.home()) + "/"]
