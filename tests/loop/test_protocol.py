import math

import numpy as np
import pytest

from activeseg.core.data import Dataset
from activeseg.core.util import read_json
from activeseg.loop import simulate as sim
from activeseg.loop.curves import curves
from activeseg.loop.protocol import (auc_by_seed, fraction_to_reach, mean_ci, paired_difference, saving,
                                     smallest_p, wilcoxon_p)

T_975_2DF = 4.302652729749462  # t table: t_{0.975} with 2 degrees of freedom (4.303)


def test_mean_ci_is_the_t_interval_with_the_sample_std():
    ci = mean_ci(np.array([0.1, 0.2, 0.3]))  # s = 0.1 (ddof=1), S = 3
    assert ci["mean"] == pytest.approx(0.2)
    assert ci["half_width"] == pytest.approx(T_975_2DF * 0.1 / math.sqrt(3))
    assert (ci["low"], ci["high"]) == pytest.approx((0.2 - 0.248414, 0.2 + 0.248414), abs=1e-6)


def test_mean_ci_of_one_seed_has_no_interval_and_empty_input_is_refused():
    assert mean_ci(np.array([0.7])) == {"mean": 0.7, "half_width": None, "low": None, "high": None}
    with pytest.raises(ValueError, match="non-empty 1-D"):
        mean_ci(np.array([]))


def test_wilcoxon_p_exact_on_known_cases():
    # ranks 1..6, the negative one has rank 2: W- = 2; subsets of {1..6} summing to <= 2: {}, {1}, {2}
    assert wilcoxon_p(np.array([0.01, -0.02, 0.03, 0.04, 0.05, 0.06])) == pytest.approx(2 * 3 / 64)
    assert wilcoxon_p(np.arange(1, 7) / 100) == pytest.approx(2 / 64) == smallest_p(6)
    assert wilcoxon_p(np.arange(1, 6) / 100) == pytest.approx(0.0625) == smallest_p(5)  # 5 seeds: never < 0.05
    assert wilcoxon_p(np.array([0.01, 0.02, 0.0, 0.03, 0.04])) == pytest.approx(2 / 16)  # the zero is dropped
    assert wilcoxon_p(np.zeros(6)) == 1.0


def runs_of(strategy: str, curves_by_seed: dict[int, list[float]], fractions=(0.1, 0.2, 0.4)) -> list[dict]:
    return [{"strategy": strategy, "seed": seed, "round": k, "labeled_pixel_fraction": fractions[k], "dice": d}
            for seed, dice in curves_by_seed.items() for k, d in enumerate(dice)]


def test_auc_by_seed_and_the_paired_difference():
    runs = runs_of("a", {0: [0.5, 0.8, 0.9], 1: [0.5, 0.72, 0.9]}) + runs_of("random", {0: [0.5, 0.6, 0.8],
                                                                                     1: [0.5, 0.7, 0.8]})
    a, r = auc_by_seed(runs, "a"), auc_by_seed(runs, "random")
    assert a == pytest.approx({0: 0.75, 1: 0.71}) and r == pytest.approx({0: 0.625, 1: 0.675})
    diff = paired_difference(a, r)  # differences 0.125 and 0.035
    assert diff["mean"] == pytest.approx(0.08) and diff["seeds"] == [0, 1]
    assert diff["half_width"] == pytest.approx(12.706204736174694 * 0.09 / math.sqrt(2) / math.sqrt(2))
    assert diff["p"] == pytest.approx(0.5)  # two positive differences: 2 * 1/4
    with pytest.raises(ValueError, match="no seed in common"):
        paired_difference({0: 0.7}, {1: 0.6})


def test_fraction_to_reach_interpolates_the_first_crossing():
    f, d = np.array([0.1, 0.2, 0.4]), np.array([0.5, 0.7, 0.8])
    assert fraction_to_reach(f, d, 0.6) == pytest.approx(0.15)
    assert fraction_to_reach(f, d, 0.4) == pytest.approx(0.1)  # reached at the first round: not extrapolated
    assert fraction_to_reach(f, d, 0.9) is None
    assert fraction_to_reach(np.array([0.1, 0.2, 0.3]), np.array([0.5, 0.8, 0.6]), 0.8) == pytest.approx(0.2)


def test_saving_against_random():
    assert saving(0.2, 0.5) == pytest.approx(0.6)
    assert saving(0.5, 0.4) == pytest.approx(-0.25)
    assert saving(None, 0.5) is None and saving(0.2, None) is None


def test_curves_band_is_the_t_interval_over_seeds():
    runs = runs_of("a", {0: [0.1], 1: [0.2], 2: [0.3]}) + runs_of("b", {0: [0.4, 0.6]})
    c = curves(runs)
    assert c["a"]["dice"] == pytest.approx([0.2])
    assert c["a"]["low"] == pytest.approx([0.2 - T_975_2DF * 0.1 / math.sqrt(3)])
    assert c["a"]["high"] == pytest.approx([0.2 + T_975_2DF * 0.1 / math.sqrt(3)])
    assert list(c["b"]["low"]) == list(c["b"]["high"]) == list(c["b"]["dice"]) == [0.4, 0.6]  # one seed


def test_simulation_reads_the_test_split_only_to_evaluate(tiny_cfg, tiny_data_dir, tmp_path, monkeypatch):
    """Model selection (training's best epoch) and queries use train and val; only evaluate_model reads test."""
    read_outside_evaluation: set[str] = set()
    evaluating = [False]
    image, mask, evaluate = Dataset.image, Dataset.mask, sim.evaluate_model

    def record(read):
        def wrapped(self, stem):
            if not evaluating[0]:
                read_outside_evaluation.add(stem)
            return read(self, stem)
        return wrapped

    def evaluate_model(*args, **kwargs):
        evaluating[0] = True
        try:
            return evaluate(*args, **kwargs)
        finally:
            evaluating[0] = False

    monkeypatch.setattr(Dataset, "image", record(image))
    monkeypatch.setattr(Dataset, "mask", record(mask))
    monkeypatch.setattr(sim, "evaluate_model", evaluate_model)
    out = tmp_path / "out"
    sim.simulate(tiny_cfg, tiny_data_dir, ["label_propagation"], [0], out, rounds=2, progress=False)
    split = read_json(out / "split.json")
    assert read_outside_evaluation & set(split["val"])  # the recorder sees the reads
    assert not read_outside_evaluation & set(split["test"])
