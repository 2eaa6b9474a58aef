"""Semi-supervised training in a campaign: its pseudo-labels never reach the label state, labels/ or the
ledger, and the round's revealed pixels are those of the human labels alone."""

from __future__ import annotations

import numpy as np
import pytest

from activeseg.core.config import SemiConfig
from activeseg.model.semi import Semi
from activeseg.workspace import Workspace
from tests.workspace.test_workspace import label_round, round_one, tree, ws  # noqa: F401  (fixtures)


def label_record(ws: Workspace) -> dict:
    """What a round's labels are: the label state's layers and history, labels/ and the ledger's events."""
    state = ws.label_state()
    layers = {f"{layer}/{stem}": getattr(state, layer)[stem].tobytes()
              for layer in ("known", "labels", "pseudo_known") for stem in state.shapes}
    events = [(e.seq, e.type, e.round, e.data) for e in ws.ledger.events()]
    return {"layers": layers, "revealed": state.revealed_pixels(), "history": state.history,
            "pseudo_regions": state.pseudo_regions, "labels/": tree(ws.root / "labels"), "events": events}


@pytest.mark.parametrize("method", ["mean_teacher", "fixmatch"])
def test_semi_supervised_pseudo_labels_never_reach_the_labels_or_the_ledger(ws: Workspace, method: str,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    steps = []
    loss = Semi.loss
    monkeypatch.setattr(Semi, "loss", lambda self, student, step: steps.append(step) or loss(self, student, step))
    label_round(ws)
    ws.evaluate(1)
    before = label_record(ws)
    # threshold 0: fixmatch pseudo-labels every pixel of its crops
    ws.cfg.train.semi = SemiConfig(method=method, threshold=0.0, rampup_steps=0)
    trained = ws.train(2)
    after = label_record(ws)
    assert after["events"][: len(before["events"])] == before["events"]
    assert [e[1] for e in after["events"][len(before["events"]):]] == ["round_started"]
    after["events"] = before["events"]
    assert after == before
    assert steps == list(range(trained["train_steps"])) and trained["train_steps"] > 0  # the semi term ran
    assert trained["revealed_pixels"] == before["revealed"] and not np.any(
        [ws.label_state().pseudo_known[s].any() for s in ws.label_state().shapes])
