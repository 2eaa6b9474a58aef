"""`activeseg predict` and `activeseg model list`: a tiny trained checkpoint applied to a folder (masks that
`activeseg metrics` scores, 16-bit uncertainty maps and their scale), the errors a user meets, and the
registry aliases of a workspace whose round 1 closed with tracking on."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console

from activeseg.cli.main import main
from activeseg.core.data import read_image
from activeseg.metrics import dice
from activeseg.model.inference import predict_mask
from activeseg.model.network import load_checkpoint
from activeseg.workspace import Workspace
from tests.model.test_training import train_fixed
from tests.workspace.test_workspace import SETTINGS
from tests.people import enrol


@pytest.fixture
def checkpoint(tiny_cfg, tiny_dataset, tmp_path: Path) -> Path:
    return train_fixed(tiny_cfg, tiny_dataset, 6, 64, tiny_dataset.stems[6:8], tmp_path / "model", 24, 8, 0).checkpoint


def test_predict_writes_masks_metrics_can_score_and_uncertainty_maps(checkpoint, tiny_data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["predict", "--model", str(checkpoint), "--images", str(tiny_data_dir / "images"), "--out", str(out),
            "--tile", "64", "--overlap", "16", "--quiet"]
    assert main([*args, "--uncertainty", "--passes", "3"]) == 0
    assert "wrote 10 mask(s)" in capsys.readouterr().out
    model, _ = load_checkpoint(checkpoint)
    stems = sorted(p.stem for p in (tiny_data_dir / "images").iterdir())
    for stem in stems:  # one 64 px tile per image: whole-image inference
        mask = np.asarray(Image.open(out / f"{stem}.png"))
        expected = predict_mask(model, read_image(tiny_data_dir / "images" / f"{stem}.png"), torch.device("cpu"))
        assert mask.dtype == np.uint8 and (mask == expected).mean() > 0.999
        uncertainty = Image.open(out / "uncertainty" / f"{stem}.png")
        assert uncertainty.mode == "I;16" and uncertainty.size == (64, 64)
    scale = json.loads((out / "uncertainty" / "scale.json").read_text())
    assert (scale["passes"], scale["classes"]) == (3, 2) and "65535" in scale["pixel"]

    assert main(["metrics", "--pred", str(out), "--gt", str(tiny_data_dir / "masks"), "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert sorted(scored["per_image"]) == stems
    masks = {s: np.asarray(Image.open(out / f"{s}.png")) for s in stems}
    truth = {s: np.asarray(Image.open(tiny_data_dir / "masks" / f"{s}.png")) > 0 for s in stems}
    assert scored["per_image"][stems[0]]["dice"] == pytest.approx(dice(masks[stems[0]] > 0, truth[stems[0]]))

    tiled = tmp_path / "tiled"  # 32 px tiles overlapping by 8: four to nine tiles per image, same masks but seams
    assert main(["predict", "--model", str(checkpoint), "--images", str(tiny_data_dir / "images"), "--out", str(tiled),
                 "--tile", "32", "--overlap", "8", "--quiet"]) == 0
    agreement = np.mean([(np.asarray(Image.open(tiled / f"{s}.png")) == masks[s]).mean() for s in stems])
    assert agreement > 0.97 and not (tiled / "uncertainty").exists()


def test_predict_names_what_is_wrong(checkpoint, tiny_data_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = ["--images", str(tiny_data_dir / "images"), "--out", str(tmp_path / "out")]
    assert main(["predict", "--model", "models/missing.pt", *base]) == 2
    assert "models/missing.pt: no such checkpoint" in capsys.readouterr().err
    assert main(["predict", "--model", "champion", *base]) == 2
    assert "not inside an activeseg workspace" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["predict", "--model", str(checkpoint), "--images", "empty", "--out", "out"]) == 2
    assert "empty: no image to predict" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "scan.tif").write_bytes(b"II*\x00 not really a tiff")
    assert main(["predict", "--model", str(checkpoint), "--images", "bad", "--out", "out", "--quiet"]) == 2
    assert "bad/scan.tif: unreadable image" in capsys.readouterr().err


def test_a_closed_round_is_registered_and_predicts_by_alias(tmp_path, capsys):
    ws = Workspace.init(tmp_path / "ws", "synthetic", overrides=[*SETTINGS, "tracking.mlflow=true"])
    enrol(ws.root)
    ws.train(1)
    ws.query(1)
    ws.simulate_labels(1)
    ws.approve(1, "pi")
    ws.evaluate(1)
    where = ["--workspace", str(ws.root)]
    assert main(["model", "list", *where]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert rows[0] == [f"registered model activeseg: test-split metrics, strategy {ws.cfg.query.strategy}"]
    header, row = rows[1], dict(zip(rows[1], rows[2]))
    assert header[:3] == ["version", "round", "aliases"] and len(rows) == 3
    assert (row["version"], row["round"], row["aliases"]) == ("1", "1", "champion, latest")  # and round-1
    evaluation = json.loads((ws.root / "metrics" / "evaluation.json").read_text())
    assert row["dice"] == f"{evaluation['mean']['dice']:.4g}"
    assert row["commit"] == ws.git("rev-parse", "round-001^").strip()[:12]  # HEAD when evaluate registered it
    out = tmp_path / "pred"
    images = ["--images", str(ws.root / "data" / "images"), "--out", str(out), "--quiet"]
    assert main(["predict", "--model", "champion", *images, *where]) == 0
    assert len(list(out.glob("*.png"))) == len(ws.dataset.stems)
    assert main(["predict", "--model", "round-7", *images, *where]) == 2
    assert "unknown model alias 'round-7': the valid ones are latest, champion, round-1" in capsys.readouterr().err


def test_model_list_reads_at_80_columns(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """Drawn on a terminal of 80 columns, each version is one line and no cell is cut."""
    from activeseg.cli import model, output

    commit = "0123456789abcdef" * 2
    tags = {"activeseg.round": "1", "activeseg.split": "test", "activeseg.strategy": "stochastic_batches",
            "activeseg.workspace_commit": commit, "activeseg.metric.dice": "0.812345678901",
            "activeseg.metric.voe": "0.316227766", "activeseg.metric.msd": "1.41421356",
            "activeseg.metric.hd95": "123.456789"}
    versions = [SimpleNamespace(version=n, tags={**tags, "activeseg.round": str(n)}) for n in (1, 2, 10)]
    aliases = {"1": ["round-1"], "2": ["round-2"], "10": ["champion", "round-10", "latest"]}
    registry = SimpleNamespace(name="activeseg", versions=lambda: versions, aliases=lambda: aliases)
    monkeypatch.setattr(model, "_registry", lambda args: (None, registry))
    monkeypatch.setenv("COLUMNS", "80")
    screen = io.StringIO()
    monkeypatch.setattr(output, "console", Console(file=screen, force_terminal=True, soft_wrap=True,
                                                      color_system=None))

    assert main(["model", "list"]) == 0
    lines = screen.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80 and "…" not in screen.getvalue()
    assert lines[0] == "registered model activeseg: test-split metrics, strategy stochastic_batches"
    rows = [line.split() for line in lines if line.split()[:1] in (["1"], ["2"], ["10"])]
    assert rows == [["1", "1", "-", "0.8123", "0.3162", "1.414", "123.5", commit[:12]],
                    ["2", "2", "-", "0.8123", "0.3162", "1.414", "123.5", commit[:12]],
                    ["10", "10", "champion,", "latest", "0.8123", "0.3162", "1.414", "123.5", commit[:12]]]
