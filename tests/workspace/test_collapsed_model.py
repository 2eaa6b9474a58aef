"""A collapsed model (one class everywhere on validation, or val Dice 0): recorded with the round's
training, shown by `status`, and the round stops before the query unless
`query.allow_collapsed_model: true`."""

from __future__ import annotations

import json
from pathlib import Path
from uuid import uuid4

import pytest

from activeseg.cli.main import main
from activeseg.orchestration.guard import claim_round
from activeseg.orchestration.status import headline, status
from activeseg.workspace import Workspace
from activeseg.workspace.creation import write_params
from activeseg.workspace.errors import ModelCollapsed
from activeseg.workspace.steps import collapse_reason
from tests.conftest import TINY
from tests.orchestration.fake_engine import FakeEngine



def test_collapse_reason_by_hand() -> None:
    assert collapse_reason(0.4, [1]) == "the model predicts class 1 everywhere on the validation images"
    assert collapse_reason(0.0, [0, 1]) == "the model's validation Dice is 0"
    assert collapse_reason(0.0, [0]) == "the model predicts class 0 everywhere on the validation images"
    assert collapse_reason(0.01, [0, 1]) is None and collapse_reason(0.9, [0, 1, 2]) is None


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """Round 1 trained from random weights with a learning rate that makes training diverge (the model
    predicts one class everywhere), and collapsed models not allowed to query."""
    root = tmp_path_factory.mktemp("collapse") / "ws"
    ws = Workspace.init(root, "synthetic", overrides=[*TINY, "query.budget_pixels=2048", "train.lr=100000.0",
                                                      "pretrain.enabled=false", "query.allow_collapsed_model=false"])
    ws.train(1)
    return Workspace.open(root)


def test_the_collapse_is_recorded_and_stops_the_query(ws: Workspace) -> None:
    trained = ws.record(1).trained
    (only,) = trained.predicted_classes
    assert trained.collapsed == f"the model predicts class {only} everywhere on the validation images"
    with pytest.raises(ModelCollapsed) as caught:
        ws.query(1)
    assert str(caught.value) == (f"round 1: model collapsed ({trained.collapsed}, val Dice {trained.val_dice:.4f}); "
                                 "the round stops before "
                                 "the query. Set query.allow_collapsed_model: true in params.yaml to query with it "
                                 "anyway")
    assert ws.record(1).queried is None and ws.ledger.events(type="queried") == []


def test_status_shows_the_collapse_and_the_failed_run_says_so(ws: Workspace, capsys: pytest.CaptureFixture,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert main(["status", "--workspace", str(ws.root)]) == 0
    out = capsys.readouterr().out
    trained = ws.record(1).trained
    assert f"model of round 1 collapsed: {trained.collapsed} (val Dice {trained.val_dice:.4f})" in out

    engine, run_id = FakeEngine(), uuid4()
    claim_round(engine, ws, 1, str(run_id), "manual")
    engine.set(run_id, "FAILED", "Failed", "Task run encountered an exception ModelCollapsed: round 1: ...")
    result = status(engine, ws)
    assert (result["state"], headline(result)) == ("model_collapsed", "round 1: model_collapsed")
    assert result["collapsed"] == {"round": 1, "reason": trained.collapsed, "val_dice": trained.val_dice}
    assert result["hint"] == ("round 1's model collapsed and the round stopped before the query: set "
                              "query.allow_collapsed_model: true to query with it anyway, then `activeseg round start`")
    assert main(["status", "--json", "--workspace", str(ws.root)]) == 0
    assert json.loads(capsys.readouterr().out)["collapsed"] == result["collapsed"]


def test_allowed_a_collapsed_model_queries(ws: Workspace) -> None:
    write_params(ws.root / "params.yaml", ws.root / "params.yaml", ["query.allow_collapsed_model=true"])
    ws = Workspace.open(ws.root)
    assert len(ws.query(1)["regions"]) >= 1
    assert ws.record(1).trained.collapsed.startswith("the model predicts class ")
    assert status(None, ws)["collapsed"] is None  # it queried: nothing is stopped any more
