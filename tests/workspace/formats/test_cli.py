"""``activeseg labels export`` and ``labels import`` in a workspace: a QuPath round trip is staged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from activeseg.cli.main import main
from activeseg.workspace import Workspace
from tests.workspace.test_workspace import SETTINGS


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A workspace after init, train and query of round 1 (a request with regions)."""
    ws = Workspace.init(tmp_path_factory.mktemp("campaign") / "ws", "synthetic", overrides=SETTINGS)
    ws.train(1)
    assert len(ws.query(1)["regions"]) >= 2
    return ws


def cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_export_qupath_then_import_stages_the_batch(ws: Workspace, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    root = str(ws.root)
    code, out = cli(capsys, "labels", "export", "--round", "1", "--format", "qupath", "--out", str(tmp_path / "q"),
                    "--workspace", root)
    assert code == 0, out
    regions = ws.record(1).queried.regions
    files = sorted((tmp_path / "q").glob("*.geojson"))
    assert {f.stem for f in files} == {r.stem for r in regions}
    rects = [f for path in files for f in json.loads(path.read_text())["features"]
             if f["properties"]["classification"]["name"] == "activeseg request"]
    assert sorted(f["properties"]["name"] for f in rects) == sorted(r.id for r in regions)

    code, out = cli(capsys, "labels", "import", str(tmp_path / "q"), "--round", "1", "--format", "qupath",
                    "--annotator", "pathologist", "--workspace", root)
    assert code == 0, out
    staged = Workspace.open(ws.root).record(1).staged
    assert staged is not None and staged.annotator == "pathologist" and staged.files == len(regions)
    events = [e.type for e in Workspace.open(ws.root).ledger.events(round=1)]
    assert events[-2:] == ["labels_received", "labels_submitted"]


def test_bad_export_fails_with_its_name(ws: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "bad.geojson").write_text("{")
    code, out = cli(capsys, "labels", "import", str(tmp_path / "bad.geojson"), "--round", "1", "--format", "qupath",
                    "--annotator", "x", "--workspace", str(ws.root))
    assert code != 0 and "bad.geojson: malformed JSON" in out
