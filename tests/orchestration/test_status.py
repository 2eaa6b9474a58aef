"""The campaign at a glance (`activeseg status`) in the states a lab meets between rounds."""

from __future__ import annotations

from activeseg.orchestration.status import control_line, status
from activeseg.workspace import Workspace
from tests.workspace.test_workspace import label_round, round_one, ws  # noqa: F401


def test_a_finished_campaign_says_so_instead_of_offering_the_next_round(ws: Workspace) -> None:
    label_round(ws)
    ws.evaluate(1)
    ws.cfg.rounds = 1  # round 1 was the last
    result = status(None, ws)
    assert (result["strategy"], result["start"]) == ("coverage_then_uncertainty", "typiclust")  # how round 0 was chosen
    assert result["stop"] == "round limit: round 1 was the last"
    assert result["hint"] == ("the campaign is finished (round limit: round 1 was the last); `activeseg round start "
                              "--force` starts round 2 anyway")
    ws.cfg.rounds = 3
    assert status(None, ws)["hint"].startswith("start round 2 with `activeseg server start`")


def test_the_status_line_of_a_single_control_has_no_interval() -> None:
    row = {"round": 3, "queried_dice": None, "control_dice": 0.8, "low": None, "high": None, "n_controls": 1}
    assert control_line(row) == "round 3: Dice on queried -, on controls 0.80; pool estimate 0.80 from 1 control"
