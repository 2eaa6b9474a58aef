"""The registry and the settings name the same strategies: ``activeseg.core.config`` checks
``query.strategy`` and ``query.options`` when the settings are read, below this layer, so its list of
names, its options models and its per-region-score names must be the registry's."""

import typing

from activeseg.core.config import STRATEGY_OPTIONS, ScoreStrategy
from activeseg.strategies import STRATEGIES, Strategy, names


def test_the_settings_list_every_registered_strategy_and_no_other():
    assert list(STRATEGY_OPTIONS) == names()


def test_each_strategy_takes_its_options_model_from_the_settings():
    assert {name: cls.Options for name, cls in STRATEGIES.items()} == STRATEGY_OPTIONS


def test_the_score_strategies_of_the_settings_are_those_with_a_score_of_their_own():
    own_score = sorted(name for name, cls in STRATEGIES.items() if cls.score is not Strategy.score)
    assert list(typing.get_args(ScoreStrategy)) == own_score == ["bald", "entropy", "mc_variance", "random", "ripu"]
