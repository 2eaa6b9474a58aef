import json

import numpy as np
from PIL import Image

from activeseg.cli import main


def write_mask(path, box=None):
    mask = np.zeros((8, 8), np.uint8)
    if box:
        y0, x0, y1, x1 = box
        mask[y0:y1, x0:x1] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask).save(path)


def test_metrics_json(tmp_path, capsys):
    write_mask(tmp_path / "pred/a.png", (0, 0, 2, 2))
    write_mask(tmp_path / "gt/a.png", (0, 0, 2, 2))
    write_mask(tmp_path / "pred/b.png", (0, 0, 2, 2))
    write_mask(tmp_path / "gt/b.png")
    assert main(["metrics", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["per_image"]["a"] == {"dice": 1.0, "voe": 0.0, "msd": 0.0, "hd95": 0.0}
    assert out["per_image"]["b"] == {"dice": 0.0, "voe": 1.0, "msd": None, "hd95": None}
    assert out["mean"]["dice"] == 0.5 and out["mean"]["msd"] == 0.0 and out["mean"]["msd_skipped"] == 1


def test_bad_override_exits_with_the_key_named(tmp_path, capsys):
    code = main(["data", "synthesize", "--out", str(tmp_path), "--set", "data.clases=3"])
    assert code == 2
    assert "data.clases: unknown key" in capsys.readouterr().err


def test_params_file_and_overrides(tmp_path, capsys):
    params = tmp_path / "p.yaml"
    params.write_text("data:\n  synthetic: {n: 3, size: 32}\n")
    assert main(["data", "synthesize", "--out", str(tmp_path / "d"), "--params", str(params),
                 "--set", "data.synthetic.seed=4"]) == 0
    assert len(list((tmp_path / "d/images").glob("*.png"))) == 3
    assert Image.open(tmp_path / "d/images/syn-000.png").size == (32, 32)


def test_unknown_strategy_lists_the_valid_ones(tmp_path, tiny_data_dir, capsys):
    code = main(["simulate", "--dataset", str(tiny_data_dir), "--strategy", "psychic", "--out", str(tmp_path / "o")])
    out = capsys.readouterr().err
    assert code == 2 and "unknown strategy 'psychic'" in out and "random" in out


def test_strategies_lists_the_registry(capsys):
    assert main(["strategies"]) == 0
    out = capsys.readouterr().out
    assert "mc_variance" in out and "entropy" in out


def test_simulate_command_runs_and_prints_the_table(tmp_path, tiny_data_dir, capsys):
    from tests.conftest import TINY

    args = ["simulate", "--dataset", str(tiny_data_dir), "--strategy", "random", "--out", str(tmp_path / "o"),
            "--rounds", "2", "--seeds", "0", "--quiet"]
    for item in TINY:
        args += ["--set", item]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "AUC Dice" in out and "learning_curves.png" in out
    page = (tmp_path / "o" / "report.html").read_text()  # the comparison page: the curves and the table
    assert "<td>random</td><td>1</td><td>2</td>" in page and page.count("data:image/png;base64,") == 1
