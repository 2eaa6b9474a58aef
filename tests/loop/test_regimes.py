import pytest

from activeseg.core.config import ConfigError, dump_config
from activeseg.core.util import read_json
from activeseg.loop.regimes import compare_regimes, read_regimes, regime_arms, regime_rows, run_regime_benchmark
from activeseg.loop.simulate import summarize


def curve(strategy: str, dice_by_seed: dict[int, list[float]], seconds: float = 2.0,
          fractions=(0.1, 0.2, 0.4)) -> list[dict]:
    return [{"strategy": strategy, "seed": seed, "round": k, "labeled_pixel_fraction": fractions[k], "dice": d,
             "round_seconds": seconds + seed, "cpu_seconds": 2 * seconds}
            for seed, dice in dice_by_seed.items() for k, d in enumerate(dice)]


def results(runs: list[dict]) -> dict:
    return {"runs": runs, "summary": summarize(runs)}


def test_compare_regimes_pairs_every_arm_with_plain_random_and_reads_plain_full():
    plain = (curve("random", {0: [0.5, 0.6, 0.8], 1: [0.5, 0.7, 0.8]})  # mean 0.5, 0.65, 0.8; AUC 0.625, 0.675
             + curve("full", {0: [0.8], 1: [0.8]}, fractions=(1.0,)))  # 95 %: 0.76, 98 %: 0.784
    regime = (curve("random", {0: [0.6, 0.8, 0.9], 1: [0.6, 0.72, 0.9]}, seconds=4.0)  # AUC 0.775, 0.735
              + curve("full", {0: [0.9], 1: [0.9]}, fractions=(1.0,)))
    table = compare_regimes({"plain": results(plain), "regime": results(regime)})
    assert set(table) == {"plain/random", "plain/full", "regime/random", "regime/full"}
    base, arm, full = table["plain/random"], table["regime/random"], table["regime/full"]
    base_95, base_98 = 0.2 + 0.11 / 0.15 * 0.2, 0.2 + 0.134 / 0.15 * 0.2
    arm_98 = 0.2 + 0.024 / 0.14 * 0.2
    assert base["fraction_to_95pct_full"] == pytest.approx(base_95)
    assert base["fraction_to_98pct_full"] == pytest.approx(base_98)
    assert arm["fraction_to_95pct_full"] == pytest.approx(0.2)
    assert arm["fraction_to_98pct_full"] == pytest.approx(arm_98)
    assert arm["saving_95pct"] == pytest.approx(0.22 / 0.52)
    assert arm["saving_98pct"] == pytest.approx(1 - arm_98 / base_98)
    assert arm["diff_to_plain"]["mean"] == pytest.approx(0.105) and arm["diff_to_plain"]["p"] == pytest.approx(0.5)
    assert arm["auc_dice_ci"]["mean"] == pytest.approx(0.755)
    assert arm["full_dice"] == pytest.approx(0.9) and base["full_dice"] == pytest.approx(0.8)
    assert full["fraction_to_95pct_full"] == 1.0  # its single round, at all pixels, is above plain's full
    assert (arm["round_seconds"], arm["cpu_seconds"], base["round_seconds"]) == (4.5, 8.0, 2.5)
    for row in (base, full, table["plain/full"]):
        assert row["diff_to_plain"] is None and row["saving_95pct"] is None
    rows = regime_rows(table)
    assert [row[0] for row in rows] == ["regime/full", "plain/full", "regime/random", "plain/random"]
    assert rows[2] == ("regime/random", f"0.755 +- {arm['auc_dice_ci']['half_width']:.3f}",
                       f"+0.105 +- {arm['diff_to_plain']['half_width']:.3f}", "0.5000", "20.0 %", "23.4 %",
                       "0.900", "42.3 %", "38.1 %", "4.5", "8.0")


def test_regimes_file_adds_plain_and_refuses_overrides_for_it(tmp_path):
    path = tmp_path / "regimes.yaml"
    path.write_text("semi: [train.semi.method=mean_teacher]\n")
    assert read_regimes(path) == {"plain": [], "semi": ["train.semi.method=mean_teacher"]}
    path.write_text("plain: [train.passes=1]\n")
    with pytest.raises(ConfigError, match="plain is the baseline"):
        read_regimes(path)
    assert regime_arms("plain", ["suggestive"]) == ["random", "full"]
    assert regime_arms("semi", ["suggestive"]) == ["suggestive", "random", "full"]


def test_regime_benchmark_runs_the_arms_on_one_split(tiny_cfg, tiny_data_dir, tmp_path):
    params, out = tmp_path / "params.yaml", tmp_path / "b"
    dump_config(tiny_cfg, params)
    regime = ["pretrain.enabled=true", "train.semi.method=mean_teacher", "train.augment.preset=auto"]
    arms = {"plain": ["pretrain.enabled=false"], "new": regime}
    report = run_regime_benchmark(params, [], arms, tiny_data_dir, [], [0, 1], out, rounds=2, progress=False)
    assert set(report["comparison"]) == {"plain/random", "plain/full", "new/random", "new/full"}
    assert (out / "new" / "pretrain" / "model.pt").is_file() and not (out / "plain" / "pretrain").exists()
    assert read_json(out / "new" / "split.json") == read_json(out / "plain" / "split.json")
    row = report["comparison"]["new/random"]
    assert row["diff_to_plain"]["seeds"] == [0, 1] and row["cpu_seconds"] > 0
    assert "| new/random | " in (out / "benchmark.md").read_text() and (out / "learning_curves.png").exists()
