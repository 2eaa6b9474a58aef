import subprocess
import sys
from pathlib import Path

import pytest

from activeseg.core import synthetic
from activeseg.core.config import (SYNTHETIC_NAMES, Config, ConfigError, dump_config, initial_method, load_config,
                                   parse_override)

ROOT = Path(__file__).resolve().parents[2]


def test_project_params_are_the_defaults():
    assert load_config(ROOT / "params.yaml") == Config()


def test_override_sets_typed_values():
    cfg = load_config(None, ["train.steps_per_epoch=3", "query.budget_fraction=0.1", "partition.granularity=image",
                             "query.budget_pixels=500"])
    assert (cfg.train.steps_per_epoch, cfg.query.budget_fraction, cfg.partition.granularity) == (3, 0.1, "image")
    assert cfg.query.budget_pixels == 500


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epoch=3", "train.epoch: unknown key"),
        ("train.steps_per_epoch=ten", "train.steps_per_epoch: expected int, got 'ten'"),
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
        load_config(None, ["train.steps_per_epoch"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.steps_per_epoch=1.5", "train.steps_per_epoch: expected int, got 1.5"),
        ("train.lr=true", "train.lr: expected a number, got True"),
        ("tracking.uri=3", "tracking.uri: expected a string, got 3"),
        ("train=5", "train: expected a mapping, got 5"),
        ("query.options.focannot=0.5", "query.options.focannot: expected a mapping, got 0.5"),
        ("data.classes=1", "data.classes: must be at least 2, got 1"),
        ("data.split.val=-0.1", "data.split.val: must be positive, got -0.1"),
        ("data.split.train=0.7", "data.split: train, val and test must be positive and sum to 1, got 1.1"),
        ("query.budget_fraction=0", "query.budget_fraction: must be in (0, 1], got 0"),
        ("model.dropout=1", "model.dropout: must be in [0, 1), got 1"),
        ("rounds=0", "rounds: must be at least 1, got 0"),
        ("oracle.timeout_hours=0", "oracle.timeout_hours: must be positive, got 0"),
        ("campaign.budget_pixels=0", "campaign.budget_pixels: must be positive, got 0"),
        ("campaign.plateau_rounds=-1", "campaign.plateau_rounds: must not be negative, got -1"),
        ("schedule.cron=0 6 *", "schedule.cron: expected 5 fields (minute hour day month weekday), got '0 6 *'"),
        ("train.crop=30", "train.crop: must be a multiple of 2**model.depth = 8"),
        ("model.depth=7", "train.crop: must be a multiple of 2**model.depth = 128"),
        ("query.cluster=scheduler:8786", "query.cluster: expected null, local or a Dask scheduler address "
                                         "tcp://host:port, got 'scheduler:8786'"),
        ("query.shard_size=0", "query.shard_size: must be at least 1, got 0"),
    ],
)
def test_constraint_messages_are_exact(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert str(err.value) == message


def test_values_at_the_bounds_are_accepted():
    cfg = load_config(None, ["data.split={train: 0.5, val: 0.25, test: 0.25}", "query.budget_fraction=1",
                             "partition.overlap=0", "campaign.plateau_rounds=0", "schedule.cron=0 6 * * 1"])
    assert (cfg.data.split.train, cfg.query.budget_fraction, cfg.schedule.cron) == (0.5, 1.0, "0 6 * * 1")


def test_an_int_is_stored_as_a_float_where_a_float_is_expected():
    cfg = load_config(None, ["oracle.timeout_hours=3", "query.budget_fraction=1"])
    assert type(cfg.oracle.timeout_hours) is float and type(cfg.query.budget_fraction) is float


def test_flat_and_dump_round_trip(tmp_path):
    cfg = load_config(None, ["query.options={focannot: {lam: 0.3}}", "train.steps_per_epoch=2"])
    flat = cfg.flat()
    assert flat["train.steps_per_epoch"] == 2 and flat["data.split.test"] == 0.2
    assert flat["query.options.focannot.lam"] == 0.3
    assert Config().flat()["query.options"] == {}
    dump_config(cfg, tmp_path / "params.yaml")
    assert load_config(tmp_path / "params.yaml") == cfg
    assert cfg.to_dict()["train"]["steps_per_epoch"] == 2


def test_removed_training_length_keys_fail_naming_the_file_and_the_replacement(tmp_path):
    old = tmp_path / "params.yaml"
    old.write_text("train:\n  epochs: 6\n  samples_per_epoch: 64\n")
    with pytest.raises(ConfigError) as info:
        load_config(old)
    assert str(info.value) == (f"{old}: train: epochs and samples_per_epoch: no longer parameters: training length "
                               "now follows the labeled pixels (passes, min_steps, max_steps, steps_per_epoch, "
                               "patience; see params.yaml); delete them")
    with pytest.raises(ConfigError, match="^train: min_steps \\(90\\) must not exceed max_steps \\(10\\)$"):
        load_config(None, ["train.min_steps=90", "train.max_steps=10"])


def test_exponent_floats_without_a_dot_are_numbers_in_overrides_and_files(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  lr: 3e-3\n  weight_decay: 1E-5\n")
    cfg = load_config(path, ["train.pseudo_weight=5e-1"])
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.train.pseudo_weight) == (0.003, 0.00001, 0.5)
    dump_config(cfg, tmp_path / "again.yaml")
    assert load_config(tmp_path / "again.yaml", []).train == cfg.train
    assert parse_override("data.dataset=1e5x") == (["data", "dataset"], "1e5x")  # not a number: stays text


STRATEGY_NAMES = ("(valid: bald, bsq, ceal, claspe, coreset, coverage_then_uncertainty, entropy, focannot, full, "
                  "label_propagation, maxherding, mc_variance, powerbald, random, random_fg, ripu, stochastic_batches, "
                  "suggestive, typiclust)")


@pytest.mark.parametrize(
    "override, message",
    [
        ("query.strategy=nonsense", f"query.strategy: unknown strategy 'nonsense' {STRATEGY_NAMES}"),
        ("query.options.focanot.lam=0.3", f"query.options.focanot: unknown strategy 'focanot' {STRATEGY_NAMES}"),
        ("query.options.focannot.lamda=0.3", "query.options.focannot.lamda: unknown key (valid keys here: lam, "
                                             "n_clusters, q_fraction, t_fraction, t_from_budget, variant)"),
        ("query.options.random.k=3", "query.options.random.k: unknown key (valid keys here: none)"),
        ("query.options.focannot.variant=all",
         "query.options.focannot.variant: expected one of ['iu', 'iu_id', 'equal', 'full'], got 'all'"),
        ("query.options.label_propagation.distance=cosine",
         "query.options.label_propagation.distance: expected one of ['histogram_js', 'descriptor'], got 'cosine'"),
        ("query.options.stochastic_batches.aggregate=median",
         "query.options.stochastic_batches.aggregate: expected one of ['mean', 'max', 'sum'], got 'median'"),
        ("query.options.powerbald.base=full",
         "query.options.powerbald.base: expected one of ['bald', 'entropy', 'mc_variance', 'random', 'ripu'], "
         "got 'full'"),
        ("query.options.stochastic_batches.base=stochastic_batches",
         "query.options.stochastic_batches.base: expected one of ['bald', 'entropy', 'mc_variance', 'random', "
         "'ripu'], got 'stochastic_batches'"),
        ("query.options.ripu.k=4", "query.options.ripu.k: must be odd (a window centred on the pixel), got 4"),
        ("query.options.focannot={lam: 0.3, t_fraction: 0.5}",
         "query.options.focannot: t_fraction, q_fraction: expected t_fraction <= q_fraction, got 0.5 and 0.05"),
        ("query.reduction=max", "query.reduction: expected one of ['mean', 'top'], got 'max'"),
        ("oracle.kind=robot", "oracle.kind: expected one of ['simulated', 'human', 'labelstudio'], got 'robot'"),
        ("train.schedule=step", "train.schedule: expected one of ['cosine', 'onecycle'], got 'step'"),
        ("train.device=gpu", "train.device: expected one of ['auto', 'cpu', 'cuda'], got 'gpu'"),
        ("train.mode=resume", "train.mode: expected one of ['scratch', 'finetune'], got 'resume'"),
        ("evaluate.split=train", "evaluate.split: expected one of ['val', 'test'], got 'train'"),
        ("data.synthetic.style_weights={he: 1, sepia: 1}",
         "data.synthetic.style_weights: unknown name 'sepia' (valid: he, darkfield, ihc, pale)"),
        ("data.synthetic.object_weights={square: 1}",
         "data.synthetic.object_weights: unknown name 'square' (valid: round, elongated, lobulated)"),
    ],
)
def test_names_that_select_code_fail_when_read_listing_the_valid_ones(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert str(err.value) == message


def test_a_wrong_name_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("query:\n  strategy: nonsense\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: query.strategy: unknown strategy 'nonsense' {STRATEGY_NAMES}"


def test_strategy_options_are_kept_as_given_once_checked():
    cfg = load_config(None, ["query.strategy=powerbald", "query.options={powerbald: {base: entropy}, ripu: {k: 5}}"])
    assert (cfg.query.strategy, cfg.query.options) == ("powerbald", {"powerbald": {"base": "entropy"}, "ripu": {"k": 5}})


def test_the_settings_are_checked_without_loading_the_strategies_or_pytorch():
    code = ("import sys\nfrom activeseg.core.config import ConfigError, load_config\n"
            "try:\n    load_config(None, ['query.options.ceal.bins=0'])\nexcept ConfigError as exc:\n    print(exc)\n"
            "print(sorted(m for m in ('torch', 'activeseg.strategies') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.splitlines() == ["query.options.ceal.bins: must be at least 1, got 0", "[]"]


def test_the_synthetic_names_are_the_generator_s():
    assert SYNTHETIC_NAMES == {"style_weights": tuple(s.name for s in synthetic.STYLES),
                               "object_weights": tuple(t.name for t in synthetic.OBJECT_TYPES)}


def test_a_bad_override_names_the_option_and_a_bad_file_names_the_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  patience: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, ["train.patience=abc"])
    assert str(err.value) == "--set: train.patience: expected int, got 'abc'"
    path.write_text("train:\n  patience: zz\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, ["train.patience=4"], overrides_from="--set or --classes")
    assert str(err.value) == f"{path}: train.patience: expected int, got 'zz'"


def test_a_chosen_start_needs_pretraining():
    with pytest.raises(ConfigError, match="partition.initial_strategy: 'typiclust' picks from the pool's region "
                                          "embeddings by the pretrained encoder; set pretrain.enabled: true"):
        load_config(None, ["partition.initial_strategy=typiclust", "pretrain.enabled=false"])
    cfg = load_config(None, ["partition.initial_strategy=own", "query.strategy=suggestive"])
    assert initial_method(cfg, "suggestive") == "random"  # no start of its own
    assert initial_method(load_config(None, []), "coverage_then_uncertainty") == "typiclust"  # the defaults
    no_embeddings = load_config(None, ["query.strategy=maxherding", "pretrain.enabled=false"])
    assert initial_method(no_embeddings, "maxherding") == "random"  # own needs the pretrained encoder's embeddings
