"""train.augment settings (activeseg.core.config.AugmentConfig)."""

import pytest

from activeseg.core.config import AUGMENT_PRESETS, ConfigError, load_config


def test_the_default_is_no_augmentation():
    augment = load_config(None).train.augment
    assert augment.preset == "none" and augment.strengths("none") == AUGMENT_PRESETS["none"]
    assert set(AUGMENT_PRESETS["none"].values()) == {0.0}


def test_a_preset_and_an_explicit_strength():
    augment = load_config(None, ["train.augment={preset: em, gamma: 0.5}"]).train.augment
    assert augment.strengths("em") == {**AUGMENT_PRESETS["em"], "gamma": 0.5}


@pytest.mark.parametrize("override, message", [
    ("train.augment.hue=0.1", "train.augment.hue: unknown key"),
    ("train.augment.noise=-0.1", "train.augment.noise: must not be negative, got -0.1"),
    ("train.augment.preset=he", "train.augment.preset: expected one of"),
])
def test_wrong_settings_are_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])
