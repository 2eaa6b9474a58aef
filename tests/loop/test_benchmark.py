import json

import numpy as np
import pytest

from activeseg.core.util import read_json
from activeseg.loop.benchmark import (COLUMNS, check_split, compare, default_seeds, dice_at, pooled_differences,
                                      run_benchmark)
from activeseg.loop.simulate import summarize


def test_dice_at_interpolates_inside_the_curve_only():
    f, d = np.array([0.1, 0.2, 0.4]), np.array([0.5, 0.7, 0.8])
    assert dice_at(f, d, 0.15) == pytest.approx(0.6)
    assert dice_at(f, d, 0.4) == pytest.approx(0.8)
    assert dice_at(f, d, 0.05) is None and dice_at(f, d, 0.5) is None


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


def curve(strategy: str, dice_by_seed: dict[int, list[float]], fractions=(0.1, 0.2, 0.4)) -> list[dict]:
    return [{"strategy": strategy, "seed": seed, "round": k, "labeled_pixel_fraction": fractions[k], "dice": d}
            for seed, dice in dice_by_seed.items() for k, d in enumerate(dice)]


def test_compare_pairs_with_random_and_reads_fractions_to_95_and_98_pct_of_full():
    runs = (curve("a", {0: [0.5, 0.8, 0.9], 1: [0.5, 0.72, 0.9]})  # mean 0.5, 0.76, 0.9
            + curve("b", {0: [0.5, 0.6, 0.7], 1: [0.5, 0.6, 0.7]})
            + curve("random", {0: [0.5, 0.6, 0.8], 1: [0.5, 0.7, 0.8]})  # mean 0.5, 0.65, 0.8
            + curve("full", {0: [0.8], 1: [0.8]}, fractions=(1.0,)))  # 95 %: 0.76, 98 %: 0.784
    table = compare({"runs": runs, "summary": summarize(runs)})
    a, b, random, full = table["a"], table["b"], table["random"], table["full"]
    random_95, random_98 = 0.2 + 0.11 / 0.15 * 0.2, 0.2 + 0.134 / 0.15 * 0.2
    assert random["fraction_to_95pct_full"] == pytest.approx(random_95)
    assert random["fraction_to_98pct_full"] == pytest.approx(random_98)
    assert a["fraction_to_95pct_full"] == pytest.approx(0.2)
    assert a["fraction_to_98pct_full"] == pytest.approx(0.2 + 0.024 / 0.14 * 0.2)
    assert a["saving_95pct"] == pytest.approx(1 - 0.2 / random_95) == pytest.approx(0.22 / 0.52)
    assert a["saving_98pct"] == pytest.approx(1 - (0.2 + 0.024 / 0.14 * 0.2) / random_98)
    assert b["fraction_to_95pct_full"] is None and b["saving_95pct"] is None  # not reached
    assert a["auc_dice_ci"]["mean"] == pytest.approx(0.73)  # AUCs 0.75 and 0.71
    assert a["diff_to_random"]["mean"] == pytest.approx(0.08) and a["diff_to_random"]["p"] == pytest.approx(0.5)
    assert b["diff_to_random"]["mean"] == pytest.approx(0.6 - 0.65) and b["diff_to_random"]["half_width"] > 0
    assert random["diff_to_random"] is None and full["diff_to_random"] is None
    assert random["saving_95pct"] is None and full["saving_98pct"] is None
    assert full["fraction_to_95pct_full"] == 1.0


def test_compare_pairs_with_the_foreground_aware_random_when_it_ran():
    runs = (curve("a", {0: [0.5, 0.8, 0.9], 1: [0.5, 0.72, 0.9]})  # AUC 0.75, 0.71
            + curve("random", {0: [0.5, 0.6, 0.8], 1: [0.5, 0.7, 0.8]})  # AUC 0.625, 0.675
            + curve("random_fg", {0: [0.5, 0.7, 0.8], 1: [0.5, 0.7, 0.8]}))  # AUC 0.675, 0.675
    table = compare({"runs": runs, "summary": summarize(runs)})
    assert table["a"]["diff_to_random_fg"]["mean"] == pytest.approx((0.075 + 0.035) / 2)
    assert table["random_fg"]["diff_to_random"]["mean"] == pytest.approx(0.025)
    assert table["random_fg"]["diff_to_random_fg"] is None and table["random"]["diff_to_random_fg"] is None
    without = compare({"runs": runs[:-6], "summary": summarize(runs[:-6])})
    assert without["a"]["diff_to_random_fg"] is None


def test_pooled_differences_pair_by_dataset_and_seed():
    one = (curve("a", {0: [0.5, 0.8, 0.9], 1: [0.5, 0.72, 0.9]}) + curve("random", {0: [0.5, 0.6, 0.8], 1: [0.5, 0.7, 0.8]})
           + curve("only_here", {0: [0.1, 0.1, 0.1], 1: [0.1, 0.1, 0.1]}))
    two = curve("a", {0: [0.5, 0.6, 0.7]}) + curve("random", {0: [0.5, 0.5, 0.5]})  # AUC 0.6 against 0.5
    pooled = pooled_differences({"d1": one, "d2": two}, "random")
    assert list(pooled) == ["a"]  # a strategy missing from a dataset is not pooled
    assert pooled["a"]["seeds"] == [("d1", 0), ("d1", 1), ("d2", 0)]
    assert pooled["a"]["mean"] == pytest.approx((0.125 + 0.035 + 0.1) / 3)
    assert pooled["a"]["p"] == pytest.approx(0.25)  # three positive differences: 2 / 2^3


def test_default_is_six_seeds_and_a_leaking_split_is_refused(tmp_path):
    assert default_seeds(3) == [3, 4, 5, 6, 7, 8]
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"train": ["a", "b"], "val": ["c"], "test": ["d", "c"]}))
    with pytest.raises(ValueError, match=f"{path}: the test split shares images with train/val: \\['c'\\]"):
        check_split(path)


def test_benchmark_adds_the_references_and_writes_a_report(tiny_cfg, tiny_data_dir, tmp_path):
    out = tmp_path / "b"
    report = run_benchmark(tiny_cfg, tiny_data_dir, ["entropy"], [0, 1], out, rounds=2, progress=False)
    assert set(report["comparison"]) == {"entropy", "random", "full"}
    assert read_json(out / "benchmark.json")["comparison"] == json.loads(json.dumps(report["comparison"]))
    results = read_json(out / "results.json")
    assert results["comparison"] == read_json(out / "benchmark.json")["comparison"] and results["runs"]
    protocol = results["protocol"]
    assert protocol["seeds"] == [0, 1] and protocol["smallest_possible_p"] == 0.5
    assert sum(protocol["split"].values()) == 10 and protocol["split"]["test"] > 0
    assert any("cannot be below 0.5000" in w for w in protocol["warnings"])
    diff = report["comparison"]["entropy"]["diff_to_random"]
    assert diff["seeds"] == [0, 1] and 0 < diff["p"] <= 1
    md = (out / "benchmark.md").read_text()
    assert "| " + " | ".join(COLUMNS) + " |" in md and "| entropy | " in md and "warning:" in md
    assert (out / "learning_curves.png").exists()
