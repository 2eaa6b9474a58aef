"""The pretrain step of a workspace: skipped while its inputs' hash is unchanged, rerun when the data or the
settings change; training starts from it and the query stores its embedding of every candidate region."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from activeseg.cli.main import main
from activeseg.model import training
from activeseg.workspace.creation import write_params
from activeseg.workspace.workspace import Workspace
from tests.conftest import TINY
from tests.people import enrol


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    ws = Workspace.init(tmp_path / "ws", "synthetic",
                        overrides=[*TINY, "query.budget_pixels=2048", "pretrain.enabled=true"])
    ws.partition()
    return ws


def test_pretrain_is_skipped_while_its_inputs_are_unchanged_and_rerun_when_they_change(ws: Workspace, capsys):
    first = ws.pretrain()
    checkpoint = ws.root / "pretrain" / "model.pt"
    assert first["steps"] == 4 and checkpoint.is_file() and (ws.root / "pretrain" / "pretrain.json").is_file()
    assert Workspace.open(ws.root).pretrain() == first  # skipped: the recorded result
    assert main(["step", "pretrain", "--workspace", str(ws.root)]) == 0  # by hand, as the dvc.yaml stage runs it
    assert first["checkpoint_sha256"] in capsys.readouterr().out

    write_params(ws.root / "params.yaml", ws.root / "params.yaml", ["pretrain.seed=1"])
    settings = Workspace.open(ws.root).pretrain()
    assert settings["inputs_sha256"] != first["inputs_sha256"] and settings["created"] != first["created"]

    stem = ws.regions()[0].stem
    path = ws.dataset.samples[stem].image_path
    Image.fromarray(255 - np.asarray(Image.open(path))).save(path)  # the pool's data changed
    data = Workspace.open(ws.root).pretrain()
    assert data["inputs_sha256"] not in (first["inputs_sha256"], settings["inputs_sha256"])
    assert data["checkpoint_sha256"] != settings["checkpoint_sha256"]
    assert Workspace.open(ws.root).pretrain() == data

    write_params(ws.root / "params.yaml", ws.root / "params.yaml", ["pretrain.enabled=false"])
    assert Workspace.open(ws.root).pretrain() is None


def test_training_starts_from_the_pretrained_network_and_the_query_embeds_every_candidate(ws, monkeypatch):
    started = {}

    def spy(net, pretrained):
        transfer(net, pretrained)
        started["first_layer"] = net.encoder[0][0].weight.detach().clone()

    transfer = training.transfer
    monkeypatch.setattr(training, "transfer", spy)
    ws.train(1)
    pretrained = torch.load(ws.root / "pretrain" / "model.pt", weights_only=True)["state_dict"]
    assert torch.equal(started["first_layer"], pretrained["encoder.0.0.weight"])

    ws.query(1)
    embeddings = np.load(ws.root / "query" / "embeddings.npz")
    assert sorted(embeddings.files) == sorted(r.id for r in ws.regions())
    norms = [np.linalg.norm(embeddings[key]) for key in embeddings.files]
    assert np.allclose(norms, 1, atol=1e-5)


def test_a_workspace_made_before_the_pretrain_stage_still_runs_its_rounds(tmp_path: Path):
    import yaml

    ws = Workspace.init(tmp_path / "ws", "synthetic", overrides=[*TINY, "query.budget_pixels=2048"])
    enrol(ws.root)
    pipeline = yaml.safe_load((ws.root / "dvc.yaml").read_text())
    del pipeline["stages"]["pretrain"]  # as `init` wrote it before this step existed
    for stage in ("train", "query"):
        pipeline["stages"][stage]["deps"] = [d for d in pipeline["stages"][stage]["deps"] if d != "pretrain"]
    (ws.root / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    ws.git("commit", "-qam", "the dvc.yaml of an older version")
    ws.train(1)
    ws.query(1)
    ws.simulate_labels(1)
    ws.approve(1, "pi")
    assert ws.evaluate(1)["round"] == 1 and ws.verify().ok
    assert "pretrain" not in ws.vcs.stages() and "in sync" in ws.dvc("status", "-c")


def test_a_chosen_start_pretrains_at_init_and_round_one_finds_the_step_done(tmp_path: Path):
    ws = Workspace.init(tmp_path / "ws", "synthetic", overrides=[
        *TINY, "query.budget_pixels=2048", "pretrain.enabled=true", "partition.initial_strategy=typiclust"])
    record = ws.record(0)
    assert record.initial.strategy == "typiclust" and len(record.initial.regions) == 3
    from activeseg.orchestration.status import status

    assert status(None, ws)["start"] == "typiclust"
    from activeseg.loop.selection import choose_initial
    from activeseg.workspace.pretraining import pool_embeddings

    expected, _ = choose_initial(ws.cfg, ws.cfg.query.strategy, ws.regions(), ws.cfg.train.seed, pool_embeddings(ws))
    assert [r.id for r in record.initial.regions] == [r.id for r in expected]  # TypiClust on the init's network
    created = (ws.root / "pretrain" / "pretrain.json").read_text()
    assert not ws.git("ls-files", "pretrain").strip()  # a DVC output, not in git
    ws.train(1)
    assert (ws.root / "pretrain" / "pretrain.json").read_text() == created  # round 1 skipped the step
    assert ws.verify().ok
