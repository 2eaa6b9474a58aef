"""The live Label Studio loop against a real Label Studio server (tests/workspace/labelstudio_server.py):
the query step creates and fills the project, an annotator completes the tasks through Label Studio's API,
`activeseg labels pull` stages the batch as the annotator Label Studio names, `activeseg status` counts the
done tasks, and the batch still needs an approval. Marked slow and matrix (installing Label Studio takes
minutes; run with --matrix)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from activeseg.cli.main import main
from activeseg.loop.oracle import ground_truth
from activeseg.workspace import Workspace
from activeseg.workspace.exchange.formats import labelstudio
from activeseg.workspace.exchange.formats.live import STATE, LabelStudioError, client, project_tasks, pull
from activeseg.workspace.exchange.formats.service import build_request
from tests.conftest import TINY
from tests.workspace.labelstudio_server import Server, labelstudio_server  # noqa: F401  (fixture)
from tests.people import enrol

SETTINGS = [*TINY, "query.budget_pixels=2048"]  # two to four 32 x 32 regions per round


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def annotate(ls, task, ws: Workspace) -> None:
    """Paint the region's ground truth into the task's crop with the brush, as an annotator would."""
    from label_studio_sdk.converter.brush import mask2rle

    data = task.data
    region = next(ref.region() for ref in ws.record(1).requested() if ref.id == data["region_id"])
    truth = ground_truth(ws.dataset, region)
    y0, x0, y1, x1 = data["region_in_crop"]
    item = next(i for i in build_request(ws, 1).items if i.id == region.id)
    crop_h, crop_w = item.crop_box[2] - item.crop_box[0], item.crop_box[3] - item.crop_box[1]
    results = []
    for class_id in range(1, ws.cfg.data.classes):
        canvas = np.zeros((crop_h, crop_w), dtype=np.uint8)
        canvas[y0:y1, x0:x1] = (truth == class_id) * 255
        if canvas.any():
            results.append({"type": "brushlabels", "from_name": labelstudio.FROM_NAME, "to_name": labelstudio.TO_NAME,
                            "original_width": crop_w, "original_height": crop_h, "image_rotation": 0,
                            "value": {"format": "rle", "rle": mask2rle(canvas), "brushlabels": ["foreground"]}})
    ls.annotations.create(int(task.id), result=results, lead_time=1.5)


def test_live_loop_query_annotate_pull_status(labelstudio_server: Server, tmp_path: Path,  # noqa: F811
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    server = labelstudio_server
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", server.token)
    ws = Workspace.init(tmp_path / "ws", "synthetic", overrides=[
        *SETTINGS, "oracle.kind=labelstudio", f"oracle.labelstudio_url={server.url}",
        "query.control_fraction=0"])  # no controls: the tasks then carry the regions' scores
    enrol(ws.root)
    ws.train(1)
    regions = ws.query(1)["regions"]
    ids = [r["id"] for r in regions]
    assert len(ids) >= 2

    # the project exists once, with one task per requested region and the model's prediction
    state = json.loads((ws.root / STATE).read_text())
    project = state["project"]
    assert set(state["rounds"]["1"]["tasks"]) == set(ids)
    ls = client(ws)
    tasks = list(project_tasks(ls, project, "all"))
    assert sorted(t.data["region_id"] for t in tasks) == sorted(ids)
    scores = {r["id"]: r["score"] for r in regions}
    for t in tasks:
        assert t.data["activeseg_round"] == 1
        assert t.data["image"].startswith("data:image/png;base64,")
        predictions = [p if isinstance(p, dict) else p.model_dump() for p in t.predictions]
        assert len(predictions) == 1 and predictions[0]["score"] == pytest.approx(scores[t.data["region_id"]])
    assert ls.projects.get(project).label_config.count("<Label ") == ws.cfg.data.classes - 1
    ws.query(1)  # again: nothing imported twice, no second project
    assert len(list(project_tasks(ls, project))) == len(ids)
    assert json.loads((ws.root / STATE).read_text())["project"] == project
    published = ws.ledger.events(type="labelstudio_published")
    assert len(published) == 1 and published[0].data["tasks"] == len(ids)

    # nothing done yet: status and pull count; nothing is staged
    code, out, _ = run_cli(capsys, "status", "--workspace", str(ws.root))
    assert code == 0 and f"0 of {len(ids)} tasks done" in out
    code, out, err = run_cli(capsys, "labels", "pull", "--workspace", str(ws.root))
    assert code == 0 and json.loads(out)["done"] == 0 and "pull again" in err
    assert ws.record(1).staged is None

    # one task done: still not staged
    annotate(ls, tasks[0], ws)
    result = pull(ws, 1)
    assert (result["done"], result["tasks"], result["staged"]) == (1, len(ids), None)
    code, out, _ = run_cli(capsys, "status", "--workspace", str(ws.root))
    assert f"1 of {len(ids)} tasks done" in out

    # every task done: pull stages the batch as the Label Studio user and says it is ready to approve
    for t in tasks[1:]:
        annotate(ls, t, ws)
    code, out, err = run_cli(capsys, "labels", "pull", "--round", "1", "--by", "ann", "--workspace", str(ws.root))
    assert code == 0, err
    result = json.loads(out)
    assert result["done"] == result["tasks"] == len(ids)
    assert result["staged"]["annotator"] == server.email
    assert "ready to approve" in err and "activeseg approve --round 1" in err
    staged = ws.record(1).staged
    assert staged is not None and staged.annotator == server.email and ws.record(1).labels_accepted is None
    submitted = ws.ledger.events(type="labels_submitted")[-1]
    assert submitted.data["format"] == "labelstudio" and submitted.actor == "ann"  # who handed it in
    assert submitted.data["annotator"] == server.email  # who annotated it, as Label Studio names them
    code, out, _ = run_cli(capsys, "status", "--workspace", str(ws.root))
    assert f"{len(ids)} of {len(ids)} tasks done" in out and staged.batch_sha256 in out
    assert pull(ws, 1)["staged"]["batch_sha256"] == staged.batch_sha256  # pulling again changes nothing

    # the flow still needs an approval; approved, the labels are the annotator's (the ground truth)
    ws.approve(1, "pi")
    assert ws.record(1).labels_accepted.annotator == server.email
    for ref in ws.record(1).requested():
        committed = np.array(Image.open(ws.root / "labels" / "round-001" / f"{ref.id}.png"))
        assert np.array_equal(committed > 0, ground_truth(ws.dataset, ref.region()) > 0), ref.id

    # the token is in no file of the workspace, nor in the ledger
    for path in ws.root.rglob("*"):
        if path.is_file() and ".git" not in path.parts and path.stat().st_size < 5_000_000:
            assert server.token.encode() not in path.read_bytes(), path
    assert server.token not in json.dumps([e.to_dict() for e in ws.ledger.events()])


def test_approve_pulls_the_completed_annotations_first(labelstudio_server: Server, tmp_path: Path,  # noqa: F811
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """`activeseg approve` with nothing staged: while tasks are open it says how many are done and stages
    nothing; once all are done it pulls them (as `labels pull`), says what it staged and approves that."""
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", labelstudio_server.token)
    ws = Workspace.init(tmp_path / "ws", "synthetic", overrides=[
        *SETTINGS, "oracle.kind=labelstudio", f"oracle.labelstudio_url={labelstudio_server.url}"])
    enrol(ws.root)
    ws.train(1)
    ids = [r["id"] for r in ws.query(1)["regions"]]
    ls = client(ws)
    tasks = list(project_tasks(ls, json.loads((ws.root / STATE).read_text())["project"], "all"))
    approve = ["approve", "--round", "1", "--by", "pi", "--workspace", str(ws.root)]

    annotate(ls, tasks[0], ws)
    code, out, err = run_cli(capsys, *approve)
    assert code != 0 and f"nothing to approve yet: 1 of {len(ids)} tasks of round 1 are done" in out + err
    assert ws.record(1).staged is None and ws.record(1).labels_accepted is None

    for t in tasks[1:]:
        annotate(ls, t, ws)
    code, out, err = run_cli(capsys, *approve)
    assert code == 0, out + err
    accepted = ws.record(1).labels_accepted
    assert accepted is not None and accepted.annotator == labelstudio_server.email
    assert (f"pulled from Label Studio: {len(ids)} of {len(ids)} tasks done, batch {accepted.batch_sha256[:12]} from "
            f"{labelstudio_server.email} staged ({len(ids)} masks") in out
    assert "approved by pi" in out
    assert [e.type for e in ws.ledger.events(round=1)][-4:] == [
        "labels_received", "labels_submitted", "labels_approved", "labels_committed"]


def test_without_a_token_or_with_a_wrong_one_the_query_says_so(labelstudio_server: Server,  # noqa: F811
                                                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    ws = Workspace.init(tmp_path / "ws", "synthetic", overrides=[
        *SETTINGS, "oracle.kind=labelstudio", f"oracle.labelstudio_url={labelstudio_server.url}"])
    ws.train(1)
    with pytest.raises(LabelStudioError, match="LABEL_STUDIO_API_KEY"):
        ws.query(1)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "not-the-token-0123456789")
    with pytest.raises(LabelStudioError, match="401|403") as caught:
        ws.query(1)
    assert "not-the-token" not in str(caught.value)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", labelstudio_server.token)
    assert ws.query(1)["regions"]  # the recorded query, now published
    assert (ws.root / STATE).is_file()
