"""A small campaign for the report's tests: round 1 closed (after a rejected batch), round 2 queried and
waiting for labels; then one region of round 1 revoked, which adds it to round 2's open request."""

from __future__ import annotations

from pathlib import Path

import pytest

from activeseg.workspace import BatchRejected, Workspace
from tests.workspace.test_workspace import SETTINGS, label_round, write_good_batch


@pytest.fixture(scope="package")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """The campaign described in the module docstring; tests only read it."""
    parent = tmp_path_factory.mktemp("report")
    ws = Workspace.init(parent / "ws", "synthetic", overrides=SETTINGS)
    ws.train(1)
    ws.query(1)
    bad = write_good_batch(ws, parent / "bad-batch")
    sorted(bad.iterdir())[0].unlink()  # one mask missing: the batch is quarantined
    with pytest.raises(BatchRejected):
        ws.submit(1, bad, "alice")
    label_round(ws, 1)
    ws.evaluate(1)
    ws.train(2)
    ws.query(2)
    ws.revoke(1, "pi", "smudged outline", regions=[ws.record(1).queried.regions[0].id])  # asked again in round 2
    return ws


def data_uris_removed(html: str) -> str:
    """The page without its embedded images (their base64 may hold any short string by chance)."""
    from activeseg.report.page import DATA_URI

    return DATA_URI.sub("data:", html)


def machine_paths(ws: Workspace) -> list[str]:
    """Absolute paths of the machine that must not appear in a report of ``ws``."""
    return [str(ws.root), str(ws.root.parent), str(Path.home()) + "/"]
