"""The control arm of a campaign (activeseg.loop.control): a round's request holds uniformly random control
regions that nothing the annotators see tells apart; the round record names them; when the labels are
accepted the model that queried is scored on the picks and on the controls, and the estimate reaches the
audit views, the stop rule, ``status`` and the report. ``query.control_fraction: 0`` asks for none, as before."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from activeseg.core.util import read_json, sha256_file
from activeseg.loop.control import pool_estimate
from activeseg.loop.oracle import ground_truth
from activeseg.model.network import load_checkpoint, save_checkpoint
from activeseg.orchestration.status import control_line
from activeseg.report.campaign import gather
from activeseg.report.page import render_campaign
from activeseg.workspace import Workspace, WorkspaceError
from activeseg.workspace.audit import control_estimates, plateau_dice
from activeseg.workspace.exchange.formats.service import FORMATS, export_round
from activeseg.workspace.exchange.images import mask_png
from activeseg.workspace.exchange.requests import read_manifest
from tests.workspace.test_workspace import SETTINGS, label_round
from tests.people import enrol

CONTROLS = [*SETTINGS, "query.budget_pixels=4096", "query.control_fraction=0.5"]  # 2048 px: two 32 x 32 controls


def background_only(ws: Workspace) -> None:
    """Replace the round's model by one that predicts background everywhere (its record follows): its Dice
    is 0 on a region with foreground and 1 on an empty one."""
    path = ws.root / "model" / "model.pt"
    model, meta = load_checkpoint(path)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([10.0, -10.0]))
    save_checkpoint(model, path, meta)
    record = ws.record(1)
    record.trained = record.trained.model_copy(update={"checkpoint_sha256": sha256_file(path)})
    ws.records.save(record)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace after init and train of round 1 with the background-only model; tests copy it."""
    parent = tmp_path_factory.mktemp("arm")  # no "control" in the paths the request may name
    ws = Workspace.init(parent / "ws", "synthetic", overrides=CONTROLS)
    enrol(ws.root)
    ws.train(1)
    background_only(ws)
    return parent


@pytest.fixture
def ws(trained: Path, tmp_path: Path) -> Workspace:
    return Workspace.open(Path(shutil.copytree(trained, tmp_path / "campaign", symlinks=True)) / "ws")


def request_files(ws: Workspace, out: Path) -> dict[str, bytes]:
    """Everything an annotator may see of round 1: the request in the store (crops, previews, manifest,
    instructions, schema, the tools' exports written there) and each tool's export folder."""
    for fmt in FORMATS:
        export_round(ws, 1, fmt, out / fmt)
    files = {info.key: ws.store.get_bytes(info.key) for info in ws.store.list("requests/round-001/")}
    return {**files, **{str(p): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}}


def test_a_request_shows_no_sign_of_its_controls_and_the_record_names_them(ws: Workspace, tmp_path: Path) -> None:
    ws.query(1)
    queried = ws.record(1).queried
    controls, picks = queried.control_regions(), queried.picks()
    assert len(controls) == 2 and picks and [r.id for r in controls] == queried.controls
    assert [r.id for r in queried.regions] == [r.id for r in picks + controls]  # picks first, in pick order
    assert all(r.score is None for r in controls) and all(r.score is not None for r in picks)
    assert queried.budget == 4096 and queried.spent == sum(r.cost for r in queried.regions)
    assert ws.ledger.last("queried", round=1).data["controls"] == queried.controls
    manifest = read_manifest(ws.store, 1)
    listed = manifest["regions"]
    assert [r["id"] for r in listed] == sorted(r.id for r in queried.regions)  # one order, by id
    assert {r["score"] for r in listed} == {None} and len({tuple(sorted(r)) for r in listed}) == 1
    files = request_files(ws, tmp_path / "exports")
    assert all(any(k.startswith(f"requests/round-001/{fmt}/") for k in files) for fmt in FORMATS)
    for name, data in files.items():
        assert b"control" not in data.lower(), name
    instructions = files["requests/round-001/INSTRUCTIONS.md"].decode()
    assert "(in the order of their ids)" in instructions and "most informative" not in instructions


def test_the_accepted_labels_score_the_model_that_queried(ws: Workspace, tmp_path: Path) -> None:
    """The background-only model against the accepted masks: the ground truth, but the first control's mask
    all background (Dice 1 there: nothing to find, nothing found; 0 on every region with foreground)."""
    ws.query(1)
    queried = ws.record(1).queried
    empty = queried.controls[0]
    masks = {r.id: ground_truth(ws.dataset, r.region()) * (r.id != empty) for r in queried.regions}
    (tmp_path / "batch").mkdir()
    for region_id, mask in masks.items():
        (tmp_path / "batch" / f"{region_id}.png").write_bytes(mask_png(mask.astype(np.uint8), 2))
    ws.submit(1, tmp_path / "batch", "alice")
    ws.approve(1, "pi")
    check = ws.record(1).control
    truth = {i: 0.0 if mask.any() else 1.0 for i, mask in masks.items()}
    assert truth[empty] == 1.0 and 0.0 in truth.values()
    picks, controls = [truth[r.id] for r in queried.picks()], [truth[i] for i in queried.controls]
    assert check.region_dice == {i: truth[i] for i in [r.id for r in queried.picks()] + queried.controls}
    assert check.queried_dice == np.mean(picks)
    assert (check.control_dice, check.low, check.high) == pool_estimate(controls)
    assert (check.n_queried, check.n_controls, check.round) == (len(picks), 2, 1)
    assert check.checkpoint_sha256 == queried.checkpoint_sha256 and check.mlflow_run_id is None  # tracking off
    assert read_json(ws.records.path(1))["control"] == check.model_dump()
    row = control_estimates(ws)
    assert row == [check.model_dump(exclude={"region_dice"})]
    assert control_line(row[0]) == (f"round 1: Dice on queried {check.queried_dice:.2f}, on controls "
                                    f"{check.control_dice:.2f}; pool estimate {check.control_dice:.2f} "
                                    f"[{check.low:.2f}, {check.high:.2f}] from 2 controls")
    assert plateau_dice(ws) == []  # the test Dice: round 1 is not evaluated yet
    ws.cfg.campaign.plateau_on = "control"
    assert plateau_dice(ws) == [check.control_dice]
    campaign = gather(ws)
    assert campaign.controls == row
    assert [v.id for v in campaign.regions[1].views if v.control] == queried.controls
    html = render_campaign(campaign)
    assert '<section id="controls">' in html and f"<td class=\"num\">{check.control_dice:.4f}</td>" in html


def test_an_approval_with_another_model_in_place_is_refused_before_anything_is_taken_in(ws: Workspace) -> None:
    ws.query(1)
    ws.simulate_labels(1)
    path = ws.root / "model" / "model.pt"
    kept = path.read_bytes()
    path.write_bytes(b"another model")
    with pytest.raises(WorkspaceError, match="not the model that queried round 1"):
        ws.approve(1, "pi")
    assert ws.record(1).labels_accepted is None and ws.record(1).staged is not None
    path.write_bytes(kept)
    assert ws.approve(1, "pi")["batch_sha256"] == ws.record(1).labels_accepted.batch_sha256
    assert ws.record(1).control is not None


def test_without_a_control_fraction_the_request_is_the_strategy_s_alone(ws: Workspace) -> None:
    params = ws.root / "params.yaml"
    text, count = re.subn(r"control_fraction: [0-9.]+", "control_fraction: 0", params.read_text())
    assert count == 1
    params.write_text(text)
    ws = Workspace.open(ws.root)
    ws.query(1)
    queried = ws.record(1).queried
    assert queried.controls is None and queried.picks() == queried.regions and queried.budget == 4096
    listed = read_manifest(ws.store, 1)["regions"]
    assert [(r["id"], r["score"]) for r in listed] == [(r.id, r.score) for r in queried.regions]  # request order
    label_round(ws)
    stored = read_json(ws.records.path(1))
    assert "controls" not in stored["queried"] and "control" not in stored
    assert control_estimates(ws) == []

