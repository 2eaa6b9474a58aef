"""Strategy options are settings models: unknown keys, wrong types and out-of-range values name the
dotted key ``query.options.<strategy>.<option>``."""

import pytest

from activeseg.core.config import ConfigError, Settings
from activeseg.model.infovae import InfoVAEParams, InfoVAESettings
from activeseg.strategies import STRATEGIES, get_strategy


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_has_defaults_and_forbids_unknown_options(name):
    assert issubclass(STRATEGIES[name].Options, Settings)
    get_strategy(name)
    with pytest.raises(ConfigError, match=rf"^query\.options\.{name}\.nope: unknown key \(valid keys here: "):
        get_strategy(name, {"nope": 1})


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("focannot", {"n_clusters": "3"}, "query.options.focannot.n_clusters: expected int, got '3'"),
        ("focannot", {"t_from_budget": "yes"}, "query.options.focannot.t_from_budget: expected true or false, got 'yes'"),
        ("focannot", {"variant": "all"},
         "query.options.focannot.variant: expected one of ['iu', 'iu_id', 'equal', 'full'], got 'all'"),
        ("focannot", {"lam": 1.5}, "query.options.focannot.lam: must be in [0, 1], got 1.5"),
        ("focannot", {"t_fraction": 0.5},
         "query.options.focannot: t_fraction, q_fraction: expected t_fraction <= q_fraction, got 0.5 and 0.05"),
        ("ceal", {"middle_width": 0}, "query.options.ceal.middle_width: must be in (0, 1], got 0"),
        ("ceal", {"low_weight": -1}, "query.options.ceal.low_weight: must not be negative, got -1"),
        ("ceal", {"low_weight": 0, "middle_weight": 0, "high_weight": 0},
         "query.options.ceal: low_weight, middle_weight, high_weight: must not all be 0"),
        ("suggestive", {"k_candidates": 0}, "query.options.suggestive.k_candidates: must be at least 1, got 0"),
        ("stochastic_batches", {"n_batches": 0}, "query.options.stochastic_batches.n_batches: must be at least 1, got 0"),
        ("stochastic_batches", {"base": "stochastic_batches"},
         "query.options.stochastic_batches.base: expected one of ['bald', 'entropy', 'mc_variance', 'random', "
         "'ripu'], got 'stochastic_batches'"),
        ("bsq", {"n_unc": 2.5}, "query.options.bsq.n_unc: a fraction in (0, 1] or a whole count, got 2.5"),
        ("bsq", {"sigma_floor": 0}, "query.options.bsq.sigma_floor: must be positive, got 0"),
        ("bsq", {"size": 20}, "query.options.bsq.size: must be a positive multiple of 8, got 20"),
        ("bsq", {"latent_dim": 0}, "query.options.bsq.latent_dim: must be at least 1, got 0"),
    ],
)
def test_bad_options_name_the_dotted_key(name, options, message):
    with pytest.raises(ConfigError) as err:
        get_strategy(name, options)
    assert str(err.value) == message


def test_an_int_is_accepted_where_a_float_is_expected():
    options = get_strategy("ceal", {"low_weight": 1}).options
    assert options.low_weight == 1.0 and type(options.low_weight) is float


def test_bsq_options_reuse_the_infovae_settings():
    assert issubclass(STRATEGIES["bsq"].Options, InfoVAESettings)
    vae = {"size": 16, "latent_dim": 3, "width": 4, "epochs": 2, "batch_size": 8, "lr": 0.01, "mmd_weight": 2.0,
           "kernel_sigma2": 1.5}
    strategy = get_strategy("bsq", {**vae, "n_unc": 4, "vae_seed": 7})
    assert strategy.vae_params == InfoVAEParams(**vae, seed=7)
    with pytest.raises(ConfigError, match=r"query\.options\.bsq\.seed: unknown key .*vae_seed"):
        get_strategy("bsq", {"seed": 7})
