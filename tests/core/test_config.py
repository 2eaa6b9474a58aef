from pathlib import Path

import pytest

from activeseg.core.config import Config, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


def test_project_params_are_the_defaults():
    assert load_config(ROOT / "params.yaml") == Config()


def test_override_sets_typed_values():
    cfg = load_config(None, ["train.epochs=3", "query.budget_fraction=0.1", "partition.granularity=image",
                             "query.budget_pixels=500"])
    assert (cfg.train.epochs, cfg.query.budget_fraction, cfg.partition.granularity) == (3, 0.1, "image")
    assert cfg.query.budget_pixels == 500


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epoch=3", "train.epoch: unknown key"),
        ("train.epochs=ten", "train.epochs: expected int, got 'ten'"),
        ("partition.granularity=slice", "partition.granularity: expected one of ['image', 'patch']"),
        ("tracking.mlflow=maybe", "tracking.mlflow: expected true or false"),
        ("partition.overlap=1.5", "partition.overlap: must be in [0, 1)"),
        ("nosection.key=1", "nosection: unknown key"),
        ("train.crop=30", "train.crop: must be a multiple of 2**model.depth"),
    ],
)
def test_wrong_key_or_value_names_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert message in str(err.value)


def test_bad_file_is_named(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("train:\n  lr: fast\n")
    with pytest.raises(ConfigError, match=r"p.yaml: train.lr: expected a number"):
        load_config(bad)


def test_override_without_equals_is_an_error():
    with pytest.raises(ConfigError, match="expected key.path=value"):
        load_config(None, ["train.epochs"])
