"""The campaign's stop rules: round limit, label budget, Dice plateau (on test Dice or the control estimate)."""

from activeseg.core.config import CampaignConfig
from activeseg.loop.stop_rules import stop_rule


def test_round_limit_stops_after_the_last_round():
    rules = CampaignConfig()
    assert stop_rule(rules, 3, 3, 0, 1000, []) is None
    assert stop_rule(rules, 4, 3, 0, 1000, []) == "round limit: round 3 was the last"


def test_label_budget_in_pixels_or_as_a_fraction_of_the_pool():
    pixels = CampaignConfig(budget_pixels=1000)
    assert stop_rule(pixels, 2, 9, 999, 4000, []) is None
    assert stop_rule(pixels, 2, 9, 1000, 4000, []) == "label budget: 1000 pixels labeled, budget 1000"
    fraction = CampaignConfig(budget_fraction=0.25)
    assert stop_rule(fraction, 2, 9, 999, 4000, []) is None
    assert stop_rule(fraction, 2, 9, 1000, 4000, []) == (
        "label budget: 25.0% of the training pool labeled, budget 25.0%")


def test_dice_plateau_compares_the_best_of_the_last_rounds_with_the_best_before():
    rules = CampaignConfig(plateau_rounds=2, plateau_delta=0.01)
    assert stop_rule(rules, 5, 9, 0, 1000, [0.5, 0.6, 0.605, 0.609]) == (
        "Dice plateau: best test Dice of the last 2 rounds 0.6090 gained +0.0090 on 0.6000, less than 0.01")
    assert stop_rule(rules, 5, 9, 0, 1000, [0.5, 0.6, 0.62, 0.58]) is None  # 0.62 - 0.6 = 0.02
    assert stop_rule(rules, 5, 9, 0, 1000, [0.5, 0.5, 0.4]) == (
        "Dice plateau: best test Dice of the last 2 rounds 0.5000 gained +0.0000 on 0.5000, less than 0.01")
    assert stop_rule(rules, 3, 9, 0, 1000, [0.5, 0.5]) is None  # not more rounds than the window yet
    assert stop_rule(CampaignConfig(plateau_rounds=0), 5, 9, 0, 1000, [0.5, 0.5, 0.5, 0.5]) is None


def test_the_plateau_on_the_control_estimate_names_it():
    rules = CampaignConfig(plateau_rounds=1, plateau_delta=0.01, plateau_on="control")
    assert stop_rule(rules, 4, 9, 0, 1000, [0.7, 0.705]) == (
        "Dice plateau: best control estimate of the pool Dice of the last 1 rounds 0.7050 gained +0.0050 on 0.7000, "
        "less than 0.01")
    assert stop_rule(rules, 4, 9, 0, 1000, [0.7, 0.75]) is None
