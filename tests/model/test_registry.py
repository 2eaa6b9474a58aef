"""The MLflow model registry of a campaign (activeseg.model.tracking.ModelRegistry) on the embedded SQLite
store: aliases move as rounds complete, ``champion`` follows the best Dice, a rerun registers nothing new."""

from __future__ import annotations

from pathlib import Path

import pytest

from activeseg.core.util import sha256_file
from activeseg.model.network import build_model, save_checkpoint
from activeseg.model.tracking import ModelRegistry, RoundModel, Tracker, champion_round


def test_champion_is_the_best_dice_and_the_earliest_among_equals():
    assert champion_round({1: 0.4, 2: 0.7, 3: 0.7, 4: 0.65}) == 2
    assert champion_round({1: None, 2: 0.1}) == 2
    assert champion_round({1: None}) is None and champion_round({}) is None


def test_aliases_move_as_rounds_complete_and_a_rerun_registers_nothing(tmp_path: Path):
    tracker = Tracker(None, "campaign-a", tmp_path / "mlflow")
    checkpoint = tmp_path / "model.pt"
    save_checkpoint(build_model(1, 2, 4, 2, 0.2), checkpoint,
                    {"in_channels": 1, "classes": 2, "width": 4, "depth": 2, "dropout": 0.2})
    registry = ModelRegistry(tracker)
    assert registry.versions() == [] and registry.aliases() == {}
    with pytest.raises(ValueError, match="no model registered in 'campaign-a'"):
        registry.resolve("champion")
    dice = [0.40, 0.65, 0.60, 0.65, 0.71]  # the champion: round 1, 2, 2, 2 (a tie does not move it), 5
    champions = []
    for n, value in enumerate(dice, start=1):
        with tracker.run(f"round-{n:03d}-train", {}) as run:
            run.log_artifact(checkpoint, "checkpoint")
        model = RoundModel(n, run.run_id, sha256_file(checkpoint), "test", {"dice": value, "voe": 1 - value,
                           "msd": None, "hd95": 3.0}, f"commit{n}", [f"round-{k:03d}:b{k}" for k in range(n)], "entropy")
        version = registry.register(model)
        assert registry.register(model).version == version.version  # the evaluate step rerun after a crash
        assert [int(v.version) for v in registry.versions()] == list(range(1, n + 1))
        assert registry.resolve(f"round-{n}").version == registry.resolve("latest").version == version.version
        champions.append(int(registry.resolve("champion").tags["activeseg.round"]))
    assert champions == [1, 2, 2, 2, 5]
    assert registry.aliases() == {"1": ["round-1"], "2": ["round-2"], "3": ["round-3"], "4": ["round-4"],
                                  "5": ["champion", "round-5", "latest"]}
    tags = registry.resolve("round-3").tags
    assert (tags["activeseg.workspace_commit"], tags["activeseg.label_batches"], tags["activeseg.strategy"]) == \
        ("commit3", "round-000:b0,round-001:b1,round-002:b2", "entropy")
    assert (tags["activeseg.metric.dice"], tags["activeseg.split"], "activeseg.metric.msd" in tags) == ("0.6", "test", False)
    with pytest.raises(ValueError, match="unknown model alias 'round-9': the valid ones are latest, champion, "
                                         "round-1, round-2, round-3, round-4, round-5"):
        registry.resolve("round-9")
    downloaded = registry.checkpoint("champion", tmp_path / "download")
    assert downloaded.read_bytes() == checkpoint.read_bytes()
    artifact = Path(registry.client.get_run(registry.resolve("round-2").run_id).info.artifact_uri.removeprefix("file://"))
    (artifact / "checkpoint" / "model.pt").write_bytes(b"tampered")
    with pytest.raises(ValueError, match="version 2 \\(round-2\\) does not match its registered hash"):
        registry.checkpoint("round-2", tmp_path / "download2")
