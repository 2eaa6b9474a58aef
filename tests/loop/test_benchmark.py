import json

import numpy as np
import pytest

from activeseg.loop.benchmark import compare, dice_at, fraction_to_reach, run_benchmark


def test_dice_at_interpolates_inside_the_curve_only():
    f, d = np.array([0.1, 0.2, 0.4]), np.array([0.5, 0.7, 0.8])
    assert dice_at(f, d, 0.15) == pytest.approx(0.6)
    assert dice_at(f, d, 0.4) == pytest.approx(0.8)
    assert dice_at(f, d, 0.05) is None and dice_at(f, d, 0.5) is None


def test_fraction_to_reach_interpolates_the_first_crossing():
    f, d = np.array([0.1, 0.2, 0.4]), np.array([0.5, 0.7, 0.8])
    assert fraction_to_reach(f, d, 0.6) == pytest.approx(0.15)
    assert fraction_to_reach(f, d, 0.4) == pytest.approx(0.1)
    assert fraction_to_reach(f, d, 0.9) is None


def test_compare_reads_the_references():
    runs = [{"strategy": "a", "seed": 0, "round": k, "labeled_pixel_fraction": fr, "dice": di}
            for k, (fr, di) in enumerate([(0.05, 0.5), (0.10, 0.76), (0.30, 0.9)])]
    runs.append({"strategy": "full", "seed": 0, "round": 0, "labeled_pixel_fraction": 1.0, "dice": 0.8})
    summary = {"a": {"auc_dice_mean": 0.7, "auc_dice_std": 0.0, "final_dice_mean": 0.9},
               "full": {"auc_dice_mean": 0.8, "auc_dice_std": 0.0, "final_dice_mean": 0.8}}
    row = compare({"runs": runs, "summary": summary})["a"]
    assert row["dice_at_5pct"] == 0.5 and row["dice_at_10pct"] == pytest.approx(0.76)
    assert row["dice_at_25pct"] == pytest.approx(0.76 + 0.14 * 0.75) and row["dice_at_50pct"] is None
    assert row["fraction_to_95pct_full"] == pytest.approx(0.10)  # 0.95 * 0.8 = 0.76 reached at 10 %


def test_benchmark_adds_the_references_and_writes_a_report(tiny_cfg, tiny_data_dir, tmp_path):
    report = run_benchmark(tiny_cfg, tiny_data_dir, ["entropy"], [0], tmp_path / "b", rounds=2, progress=False)
    assert set(report["comparison"]) == {"entropy", "random", "full"}
    assert json.loads((tmp_path / "b" / "benchmark.json").read_text())["comparison"] == report["comparison"]
    assert (tmp_path / "b" / "learning_curves.png").exists()
