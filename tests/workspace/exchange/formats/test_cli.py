"""``activeseg labels export`` and ``labels import`` in a workspace: a QuPath round trip is staged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from activeseg.cli.main import main
from activeseg.workspace import Workspace
from tests.workspace.test_workspace import SETTINGS
from tests.people import enrol


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A workspace after init, train and query of round 1 (a request with regions). Regions that do not
    overlap (no controls, and suggestive's picks, which are apart here): where two overlap, a shape of one
    region's pre-annotation crosses the other's edge."""
    ws = Workspace.init(tmp_path_factory.mktemp("campaign") / "ws", "synthetic",
                        overrides=[*SETTINGS, "query.control_fraction=0", "query.strategy=suggestive"])
    enrol(ws.root)
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
    said = " ".join(out.split())  # a sentence, with the command that hands the tool's export back
    assert said.startswith(f"round 1: {len(regions)} regions exported for qupath to {tmp_path / 'q'} (")
    assert said.endswith("`activeseg labels import PATH --format qupath --annotator NAME --round 1`")
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
    rejected = ws.ledger.last("batch_rejected", round=1).data  # recorded without the machine's folders
    assert rejected["reasons"][0].startswith("bad.geojson: malformed JSON") and str(tmp_path) not in str(rejected)


def test_submit_and_import_say_what_was_staged_and_the_next_command(ws: Workspace, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    from activeseg.workspace.exchange.images import mask_png

    request, truth = _truth(ws)
    folder = tmp_path / "masks"
    folder.mkdir()
    for region_id, mask in truth.items():
        (folder / f"{region_id}.png").write_bytes(mask_png(mask, ws.cfg.data.classes))
    before = Workspace.open(ws.root).record(1).staged.batch_sha256
    code, out = cli(capsys, "labels", "submit", str(folder), "--round", "1", "--annotator", "alice", "--replace",
                    "--workspace", str(ws.root))
    staged = Workspace.open(ws.root).record(1).staged
    assert code == 0 and out == (
        f"round 1: batch {staged.batch_sha256[:12]} from alice staged ({len(truth)} masks, replacing batch "
        f"{before[:12]}); approve it with `activeseg approve --round 1 --by NAME` or reject it with "
        "`activeseg reject --round 1 --by NAME --reason TEXT`\n")

    cli(capsys, "labels", "export", "--round", "1", "--format", "qupath", "--out", str(tmp_path / "q"),
        "--workspace", str(ws.root))
    code, out = cli(capsys, "labels", "import", str(tmp_path / "q"), "--round", "1", "--format", "qupath",
                    "--annotator", "bob", "--replace", "--workspace", str(ws.root))
    staged = Workspace.open(ws.root).record(1).staged
    assert code == 0 and out.startswith(f"round 1: batch {staged.batch_sha256[:12]} from bob staged ("), out


# -- the import path: tool annotators, uncorrected predictions, bad exports quarantined ------------------

def _truth(ws: Workspace) -> tuple:
    """Round 1's request as the formats see it and each region's ground truth."""
    from activeseg.core.partition import Region
    from activeseg.loop.oracle import ground_truth
    from activeseg.workspace.exchange.formats.service import build_request

    request = build_request(ws, 1)
    return request, {item.id: ground_truth(ws.dataset, Region(item.stem, *item.box)) for item in request.items}


def test_export_is_kept_in_the_round_request(ws: Workspace, tmp_path: Path) -> None:
    from activeseg.workspace.exchange.formats.service import PREDICTION, export_round

    request, truth = _truth(ws)
    summary = export_round(ws, 1, "cvat", tmp_path / "c", prediction=lambda item: truth[item.id])
    assert summary["store"] == f"{ws.store.url}/requests/round-001/cvat/"
    kept = ws.store.get_bytes("requests/round-001/cvat/annotations.xml")
    assert kept == (tmp_path / "c/annotations.xml").read_bytes()
    assert ws.store.exists(f"requests/round-001/cvat/images/{request.items[0].id}.png")
    assert ws.store.get_bytes(f"requests/round-001/cvat/{PREDICTION}") == (tmp_path / "c" / PREDICTION).read_bytes()


def test_labelstudio_import_records_its_annotator_and_unchanged_regions(ws: Workspace, tmp_path: Path) -> None:
    from activeseg.workspace.exchange.formats import labelstudio
    from activeseg.workspace.exchange.formats.service import export_round, import_round
    from tests.workspace.exchange.formats.test_formats import annotated

    request, truth = _truth(ws)
    changed = request.items[0].id
    sent = {**truth, changed: truth[changed] ^ np.eye(*truth[changed].shape, dtype=np.uint8)}
    export_round(ws, 1, "labelstudio", tmp_path / "sent", prediction=lambda item: sent[item.id])
    # the annotator corrects region 0 back to the truth and accepts the others as they were sent
    labelstudio.export(request, truth, tmp_path / "ls", lambda item: np.zeros(
        (item.crop_box[2] - item.crop_box[0], item.crop_box[3] - item.crop_box[1]), np.uint8))
    tasks = annotated(json.loads((tmp_path / "ls/tasks.json").read_text()))
    for task in tasks:
        task["annotations"][0]["completed_by"] = {"id": 3, "email": "ann@lab.example"}
    (tmp_path / "export.json").write_text(json.dumps(tasks))
    staged = import_round(ws, 1, "labelstudio", tmp_path / "export.json", "given-name", replace=True)
    assert staged.annotator == "ann@lab.example"
    event = Workspace.open(ws.root).ledger.events(type="labels_submitted", round=1)[-1]
    assert event.actor == "given-name" and event.data["annotator_given"] == "given-name"  # actor: who handed it in
    assert event.data["format"] == "labelstudio"
    assert event.data["reviewed_unchanged"] == [item.id for item in request.items if item.id != changed]


def test_bad_export_is_quarantined_then_a_good_one_is_taken(ws: Workspace, tmp_path: Path) -> None:
    from activeseg.workspace.errors import BatchRejected
    from activeseg.workspace.exchange.formats.service import export_round, import_round

    request, truth = _truth(ws)
    sent = {rid: mask ^ np.eye(*mask.shape, dtype=np.uint8) for rid, mask in truth.items()}  # not the staged batch
    export_round(ws, 1, "cvat", tmp_path / "c", prediction=lambda item: sent[item.id])
    xml = (tmp_path / "c/annotations.xml").read_text()
    xml = xml.replace("</task>", "<owner><username>owner1</username></owner>"
                                 "<assignee><username>ann2</username></assignee></task>")
    label = "label=\"foreground\""
    (tmp_path / "c/annotations.xml").write_text(xml.replace(label, "label=\"cell\"", 1))
    before = Workspace.open(ws.root).record(1).staged
    with pytest.raises(BatchRejected, match="unknown class name 'cell'") as caught:
        import_round(ws, 1, "cvat", tmp_path / "c", "given", replace=True)
    after = Workspace.open(ws.root)
    assert after.record(1).staged == before  # nothing applied
    rejected = after.ledger.events(type="batch_rejected", round=1)[-1]
    assert "unknown class name 'cell'" in rejected.data["reasons"][0] and rejected.data["annotator"] == "given"
    assert after.ledger.events(type="labels_received", round=1)[-1].data["source"] == "cvat export"
    prefix = caught.value.quarantine.removeprefix(f"{ws.store.url}/")
    report = json.loads(ws.store.get_bytes(prefix + "report.json"))
    assert report["reasons"] == caught.value.reasons and report["files"]["annotations.xml"]
    assert ws.store.get_bytes(report["files"]["annotations.xml"]) == (tmp_path / "c/annotations.xml").read_bytes()

    (tmp_path / "c/annotations.xml").write_text(xml)
    staged = import_round(ws, 1, "cvat", tmp_path / "c", "given", replace=True)
    assert staged.annotator == "ann2"  # the assignee the export names
    event = Workspace.open(ws.root).ledger.events(type="labels_submitted", round=1)[-1]
    assert event.data["reviewed_unchanged"] == [item.id for item in request.items]  # all sent back unchanged


def test_qupath_import_says_which_shapes_were_clipped(ws: Workspace, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    """A nucleus outlined whole across the first region's right edge is clipped, recorded and said."""
    request, truth = _truth(ws)
    item = request.items[0]
    root = str(ws.root)
    code, out = cli(capsys, "labels", "export", "--round", "1", "--format", "qupath", "--out", str(tmp_path / "q"),
                    "--workspace", root)
    assert code == 0, out
    path = tmp_path / "q" / f"{item.stem}.geojson"
    data = json.loads(path.read_text())
    y0, _, _, x1 = item.box
    ring = [[x1 - 2, y0 + 2], [x1 + 2, y0 + 2], [x1 + 2, y0 + 6], [x1 - 2, y0 + 6], [x1 - 2, y0 + 2]]
    data["features"].append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
                             "properties": {"objectType": "annotation", "name": "nucleus",
                                            "classification": {"name": "foreground"}}})
    path.write_text(json.dumps(data))
    code, out = cli(capsys, "labels", "import", str(tmp_path / "q"), "--round", "1", "--format", "qupath",
                    "--annotator", "pathologist", "--replace", "--workspace", root)
    assert code == 0, out
    named = f"{item.stem}.geojson: feature {len(data['features'])} 'nucleus'"
    event = Workspace.open(ws.root).ledger.events(type="labels_submitted", round=1)[-1]
    assert event.data["clipped"][item.id] == [named]
    assert f"shapes clipped at a region's edge, per region: {item.id} 1" in out


def test_the_record_keeps_which_labels_are_uncorrected_predictions(ws: Workspace, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    """Last in this module: it takes round 1's labels in."""
    from activeseg.workspace.exchange.formats import qupath
    from activeseg.workspace.exchange.formats.service import export_round, import_round
    from activeseg.workspace.exchange.intake import approve
    from activeseg.workspace.identity import Actor

    request, truth = _truth(ws)
    changed = request.items[-1].id
    sent = {**truth, changed: truth[changed] ^ np.eye(*truth[changed].shape, dtype=np.uint8)}
    export_round(ws, 1, "qupath", tmp_path / "sent", prediction=lambda item: sent[item.id])
    qupath.export(request, truth, tmp_path / "back")  # the pathologist corrected the last region only
    unchanged = [item.id for item in request.items if item.id != changed]
    staged = import_round(ws, 1, "qupath", tmp_path / "back", "pathologist", replace=True)
    assert staged.reviewed_unchanged == unchanged
    code, out = cli(capsys, "status", "--workspace", str(ws.root))
    assert code == 0 and f"{len(unchanged)} of {len(request.items)} masks are the prediction unchanged" in out
    accepted = approve(Workspace.open(ws.root), 1, Actor("lead"))
    assert accepted.reviewed_unchanged == unchanged
    reopened = Workspace.open(ws.root)
    assert reopened.record(1).staged is None
    saved = json.loads(reopened.records.path(1).read_text())["labels_accepted"]
    assert saved["reviewed_unchanged"] == unchanged and saved["annotator"] == "pathologist"
