"""Typed configuration loaded from ``params.yaml``, as pydantic models.

Every stage of the pipeline has its own section (data, partition, model, train, pretrain, query, oracle,
evaluate, tracking, campaign, schedule, storage), one :class:`Settings` model each. Unknown keys, values of the
wrong type and values out of range fail with a :class:`ConfigError` that names the dotted key, e.g.
``train.patience: expected int, got 'ten'`` or ``partition.overlap: must be in [0, 1)``.

Every value that names code (a strategy, its options, the oracle kind, the schedule, the reduction, the
device, a synthetic style...) is checked here, when the settings are read, and a wrong one fails listing
the valid names: a typo never waits minutes for the step that uses it. The names of the query strategies
and their options' models (``query.options.<strategy>``) are settings like the others, so they live here
too, below the strategies (``activeseg.strategies``, a higher layer that core must not import, and one
that loads PyTorch): each registered strategy takes its ``Options`` from :data:`STRATEGY_OPTIONS`, and
tests/strategies/test_registry.py checks that both name the same strategies.
"""

from __future__ import annotations

import copy
import re
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails


class ConfigError(ValueError):
    """A parameter file or override is wrong; the message names the key."""


class Settings(BaseModel):
    """Base of every settings model: unknown keys fail and values are never coerced from another type
    (strict: "ten" or 1.5 is not an int, "yes" not a bool; an int is accepted where a float is expected)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class SplitConfig(Settings):
    train: float = Field(0.6, gt=0)
    val: float = Field(0.2, gt=0)
    test: float = Field(0.2, gt=0)

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1) > 1e-6:
            raise ValueError(f"train, val and test must be positive and sum to 1, got {total:g}")
        return self


# the stain styles and object types of the synthetic generator (activeseg.core.synthetic: STYLES, OBJECT_TYPES)
SYNTHETIC_NAMES = {"style_weights": ("he", "darkfield", "ihc", "pale"),
                   "object_weights": ("round", "elongated", "lobulated")}


class SyntheticConfig(Settings):
    """The synthetic data set (``activeseg.core.synthetic``). The weights are the share of images drawn in
    each stain style / with each object type (any positive scale; the names of :data:`SYNTHETIC_NAMES`). The
    defaults make one style (darkfield) and one object type (lobulated) rare: 10 % of the images each."""

    n: int = Field(24, ge=1)
    size: int = Field(128, ge=1)
    seed: int = 0
    style_weights: dict[str, float] = Field(
        default_factory=lambda: {"he": 0.4, "ihc": 0.3, "pale": 0.2, "darkfield": 0.1})
    object_weights: dict[str, float] = Field(
        default_factory=lambda: {"round": 0.6, "elongated": 0.3, "lobulated": 0.1})

    @field_validator("style_weights", "object_weights")
    @classmethod
    def _known_and_some_positive(cls, weights: dict[str, float], info: ValidationInfo) -> dict[str, float]:
        valid = SYNTHETIC_NAMES[info.field_name or ""]
        unknown = sorted(set(weights) - set(valid))
        if unknown:
            raise ValueError(f"unknown name {unknown[0]!r} (valid: {', '.join(valid)})")
        if any(w < 0 for w in weights.values()) or not any(w > 0 for w in weights.values()):
            raise ValueError(f"weights must not be negative and at least one must be positive, got {weights}")
        return weights


class SlidesConfig(Settings):
    """Whole-slide images (``slides/`` in a dataset folder, ``activeseg.core.slides``): the pyramid level
    the regions are cut at, the share of tissue a tile needs to be a candidate, and the side of the
    tissue tiles that validation and evaluation score a slide on."""

    level: int = Field(0, ge=0)
    min_tissue: float = Field(0.25, gt=0, le=1)
    eval_tile: int = Field(256, ge=16)


class DataConfig(Settings):
    dataset: str = "synthetic"
    classes: int = Field(2, ge=2)
    split: SplitConfig = Field(default_factory=SplitConfig)
    seed: int = 0
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)
    slides: SlidesConfig = Field(default_factory=SlidesConfig)


class PartitionConfig(Settings):
    granularity: Literal["image", "patch"] = "patch"
    side: int = Field(64, ge=1)
    overlap: float = Field(0.5, ge=0, lt=1)
    initial_labeled: int = 4
    # how the initial labeled regions are chosen: at random, or from the pool's region embeddings by the
    # pretrained encoder (TypiClust or MaxHerding, activeseg.strategies.representative; needs pretrain.enabled);
    # own: the query strategy's own choice where it has one (typiclust, maxherding, coverage_then_uncertainty's
    # coverage) and pretraining is on, else random
    initial_strategy: Literal["random", "typiclust", "maxherding", "own"] = "own"


class ModelConfig(Settings):
    width: int = Field(16, ge=1)
    depth: int = Field(3, ge=1)
    dropout: float = Field(0.2, ge=0, lt=1)


class SemiConfig(Settings):
    """Semi-supervised consistency on unlabeled crops of the pool (``activeseg.model.semi``): ``method`` none,
    mean_teacher (Tarvainen & Valpola 2017) or fixmatch (Sohn et al. 2020); the consistency term, times
    ``weight`` and a sigmoid ramp-up over ``rampup_steps``, is added to the supervised loss;
    ``unlabeled_share`` unlabeled crops per labeled crop of a step; ``threshold``: fixmatch's confidence for
    a pseudo-label; ``ema_decay``: the mean teacher's. Its pseudo-labels are never labels: the label state,
    labels/, the ledger and the number of steps do not see them."""

    method: Literal["none", "mean_teacher", "fixmatch"] = "none"
    weight: float = Field(1.0, ge=0)
    threshold: float = Field(0.95, ge=0, le=1)
    unlabeled_share: float = Field(1.0, gt=0)
    rampup_steps: int = Field(200, ge=0)
    ema_decay: float = Field(0.99, ge=0, le=1)


# default strength of each augmentation per preset (train.augment; activeseg.model.augment says what a strength
# means); explicit strengths override these
AUGMENT_PRESETS: dict[str, dict[str, float]] = {
    "none": {"stain": 0.0, "brightness": 0.0, "contrast": 0.0, "gamma": 0.0, "blur": 0.0, "noise": 0.0,
             "scale": 0.0, "rotation": 0.0, "elastic": 0.0},
    "histology": {"stain": 0.05, "brightness": 0.1, "contrast": 0.1, "gamma": 0.1, "blur": 1.0, "noise": 0.02,
                  "scale": 0.1, "rotation": 45.0, "elastic": 2.0},
    "fluorescence": {"stain": 0.0, "brightness": 0.1, "contrast": 0.2, "gamma": 0.2, "blur": 1.0, "noise": 0.03,
                     "scale": 0.1, "rotation": 45.0, "elastic": 2.0},
    "em": {"stain": 0.0, "brightness": 0.1, "contrast": 0.2, "gamma": 0.2, "blur": 1.0, "noise": 0.03,
           "scale": 0.1, "rotation": 45.0, "elastic": 2.0},
}


class AugmentConfig(Settings):
    """``train.augment``: augmentation of the training crops beyond the flips and 90-degree turns, which are
    always on (activeseg.model.augment). ``preset`` fills each transform's default strength
    (:data:`AUGMENT_PRESETS`; ``auto``: histology, fluorescence or em as detected from the data by
    activeseg.core.image_kind, shown by ``activeseg status``); a strength set here overrides the preset's
    (0: off). The default stays ``none`` (today's training, bit for bit) until the presets' defaults are
    chosen on validation Dice over seeds."""

    preset: Literal["none", "auto", "histology", "fluorescence", "em"] = "none"
    stain: float | None = Field(None, ge=0)  # HED scale 1 + U(-s, s) and shift U(-s, s) per stain (RGB only)
    brightness: float | None = Field(None, ge=0)  # + U(-s, s)
    contrast: float | None = Field(None, ge=0)  # x (1 + U(-s, s)) about the crop's mean
    gamma: float | None = Field(None, ge=0)  # ** exp(U(-s, s))
    blur: float | None = Field(None, ge=0)  # Gaussian, sigma U(0, s) pixels
    noise: float | None = Field(None, ge=0)  # Gaussian, std U(0, s)
    scale: float | None = Field(None, ge=0)  # zoom exp(U(-s, s))
    rotation: float | None = Field(None, ge=0)  # U(-s, s) degrees
    elastic: float | None = Field(None, ge=0)  # smooth displacement, up to s pixels

    def strengths(self, preset: str) -> dict[str, float]:
        """Per transform, its strength: the one set here, else ``preset``'s (``self.preset`` resolved: not auto)."""
        return {name: default if getattr(self, name) is None else getattr(self, name)
                for name, default in AUGMENT_PRESETS[preset].items()}


class TrainConfig(Settings):
    """Label-bound training: ``ceil(passes x labeled pixels / (batch_size x crop^2))`` steps, clamped to
    ``[min_steps, max_steps]``, in epochs of ``steps_per_epoch`` steps (see activeseg.model.training)."""

    passes: float = Field(240.0, gt=0)
    min_steps: int = Field(40, ge=1)
    max_steps: int = Field(1200, ge=1)
    steps_per_epoch: int = Field(20, ge=1)
    patience: int = Field(4, ge=0)
    schedule: Literal["cosine", "onecycle"] = "cosine"
    foreground_oversample: float = Field(0.0, ge=0, le=1)
    threads: int = Field(0, ge=0)
    batch_size: int = Field(8, ge=1)
    crop: int = Field(64, ge=1)
    lr: float = 0.003
    weight_decay: float = 0.0
    dice_weight: float = 1.0
    pseudo_weight: float = 0.5
    mode: Literal["scratch", "finetune"] = "finetune"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # processes of DistributedDataParallel training (one per GPU on CUDA, gloo processes on CPU); the global
    # batch batch_size is split evenly across them
    devices: int = Field(1, ge=1)
    seed: int = 0
    semi: SemiConfig = Field(default_factory=SemiConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)

    @model_validator(mode="before")
    @classmethod
    def _no_removed_keys(cls, data: Any) -> Any:
        removed = sorted({"epochs", "samples_per_epoch"} & set(data)) if isinstance(data, dict) else []
        if removed:
            raise ValueError(f"{' and '.join(removed)}: no longer parameters: training length now follows the "
                             "labeled pixels (passes, min_steps, max_steps, steps_per_epoch, patience; see "
                             "params.yaml); delete them")
        return data

    @model_validator(mode="after")
    def _steps_in_order(self) -> TrainConfig:
        if self.min_steps > self.max_steps:
            raise ValueError(f"min_steps ({self.min_steps}) must not exceed max_steps ({self.max_steps})")
        if self.batch_size % self.devices:
            raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of devices ({self.devices}): each "
                             "process trains on batch_size / devices crops of the global batch")
        if self.semi.method != "none" and self.devices > 1:
            raise ValueError(f"semi.method {self.semi.method} trains in one process only for now; set devices: 1 "
                             "or semi.method: none")
        return self


class PretrainConfig(Settings):
    """Self-supervised pretraining on the pool's images before a campaign's first training (masked
    reconstruction, see activeseg.model.pretrain): ``steps`` optimisation steps on batches of
    ``batch_size`` random crops of side ``crop``, each with ``mask_ratio`` of its ``patch`` x ``patch``
    cells hidden. On by default: neutral for training on validation Dice (issue 21), but its encoder's
    embeddings give the default strategy its chosen start and its coverage (issue 22, docs/benchmarks.md)."""

    enabled: bool = True
    steps: int = Field(500, ge=1)
    batch_size: int = Field(8, ge=1)
    crop: int = Field(64, ge=1)
    mask_ratio: float = Field(0.5, gt=0, lt=1)
    patch: int = Field(8, ge=1)
    lr: float = Field(0.003, gt=0)
    seed: int = 0

    @model_validator(mode="after")
    def _patch_tiles_the_crop(self) -> PretrainConfig:
        if self.crop % self.patch:
            raise ValueError(f"crop ({self.crop}) must be a multiple of patch ({self.patch})")
        return self


class NoOptions(Settings):
    """The options of a strategy that has none."""


class InfoVAESettings(Settings):
    """The infoVAE's input size, architecture and training, without the seed (``activeseg.model.infovae``):
    ``bsq``'s options extend it."""

    size: int = 32
    latent_dim: int = Field(16, ge=1)
    width: int = Field(16, ge=1)
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = 1e-3
    mmd_weight: float = 1.0
    kernel_sigma2: float | None = None

    @field_validator("size")
    @classmethod
    def _multiple_of_8(cls, size: int) -> int:
        if size < 8 or size % 8:
            raise ValueError(f"must be a positive multiple of 8, got {size}")
        return size


class BsqOptions(InfoVAESettings):
    """``query.options.bsq`` (``activeseg.strategies.bsq``): the infoVAE's settings, its own seed and the
    two of the query."""

    n_unc: float = Field(0.1, gt=0)
    sigma_floor: float = Field(0.1, gt=0)
    vae_seed: int = 0

    @field_validator("n_unc")
    @classmethod
    def _fraction_or_count(cls, n_unc: float) -> float:
        if n_unc > 1 and n_unc != int(n_unc):
            raise ValueError(f"a fraction in (0, 1] or a whole count, got {n_unc}")
        return n_unc


class CealOptions(Settings):
    """``query.options.ceal`` (``activeseg.strategies.ceal``)."""

    low_weight: float = Field(10.0, ge=0)
    middle_weight: float = Field(15.0, ge=0)
    high_weight: float = Field(10.0, ge=0)
    middle_width: float = Field(0.5, gt=0, le=1)
    bins: int = Field(10, ge=1)
    pseudo_fraction: float = Field(0.25, ge=0, le=1)

    @model_validator(mode="after")
    def _some_weight(self) -> CealOptions:
        if self.low_weight + self.middle_weight + self.high_weight <= 0:
            raise ValueError("low_weight, middle_weight, high_weight: must not all be 0")
        return self


class FocAnnotOptions(Settings):
    """``query.options.focannot`` (``activeseg.strategies.focannot``)."""

    variant: Literal["iu", "iu_id", "equal", "full"] = "full"
    n_clusters: int = Field(3, ge=1)
    lam: float = Field(0.5, ge=0, le=1)
    q_fraction: float = Field(0.05, gt=0, le=1)
    t_fraction: float = Field(0.025, gt=0, le=1)
    t_from_budget: bool = True

    @model_validator(mode="after")
    def _t_within_q(self) -> FocAnnotOptions:
        if self.t_fraction > self.q_fraction:
            raise ValueError("t_fraction, q_fraction: expected t_fraction <= q_fraction, "
                             f"got {self.t_fraction} and {self.q_fraction}")
        return self


class LabelPropagationOptions(Settings):
    """``query.options.label_propagation`` (``activeseg.strategies.label_propagation``)."""

    k: int = Field(40, ge=1)
    distance: Literal["histogram_js", "descriptor"] = "histogram_js"
    bins: int = Field(32, ge=1)
    threshold_steps: int = Field(19, ge=1)


# the strategies with a per-region score (a Strategy.score of their own), which powerbald and
# stochastic_batches can draw on (option base)
ScoreStrategy = Literal["bald", "entropy", "mc_variance", "random", "ripu"]


class PowerBaldOptions(Settings):
    """``query.options.powerbald`` (``activeseg.strategies.powerbald``)."""

    base: ScoreStrategy = "bald"
    beta: float = Field(1.0, gt=0)


class RipuOptions(Settings):
    """``query.options.ripu`` (``activeseg.strategies.ripu``)."""

    k: int = Field(3, ge=3)

    @field_validator("k")
    @classmethod
    def _odd(cls, k: int) -> int:
        if k % 2 == 0:
            raise ValueError(f"must be odd (a window centred on the pixel), got {k}")
        return k


class StochasticBatchesOptions(Settings):
    """``query.options.stochastic_batches`` (``activeseg.strategies.stochastic_batches``)."""

    base: ScoreStrategy = "entropy"
    aggregate: Literal["mean", "max", "sum"] = "mean"
    n_batches: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)


class TypiclustOptions(Settings):
    """``query.options.typiclust`` (``activeseg.strategies.typiclust``): Hacohen et al. 2022's constants."""

    min_cluster_size: int = Field(5, ge=1)  # clusters of at most this many regions are dropped
    neighbours: int = Field(20, ge=1)  # typicality over k = min(neighbours, cluster size / 2) nearest neighbours


class MaxHerdingOptions(Settings):
    """``query.options.maxherding`` (``activeseg.strategies.maxherding``): the RBF kernel
    k(x, y) = exp(-|x - y|^2 / (2 bandwidth^2)) on L2-normalised embeddings."""

    bandwidth: float = Field(0.5, gt=0)


class ClaspeOptions(Settings):
    """``query.options.claspe`` (``activeseg.strategies.claspe``): share of the budget spent by the foreground
    classes' scores (the rest by entropy) and the largest inverse temperature of the Gumbel noise."""

    foreground_share: float = Field(0.66, ge=0, le=1)
    beta_max: float = Field(100.0, gt=0)


class CoverageThenUncertaintyOptions(Settings):
    """``query.options.coverage_then_uncertainty`` (``activeseg.strategies.coverage_then_uncertainty``): the
    coverage strategy until the pool's mean coverage passes ``threshold``, then ``claspe``."""

    coverage: Literal["typiclust", "maxherding"] = "typiclust"
    threshold: float = Field(0.5, gt=0, le=1)
    bandwidth: float = Field(0.5, gt=0)  # of the coverage kernel, as maxherding's


class SuggestiveOptions(Settings):
    """``query.options.suggestive`` (``activeseg.strategies.suggestive``)."""

    k_candidates: int | None = Field(None, ge=1)


# every name query.strategy accepts, with the settings model of its options (query.options.<name>)
STRATEGY_OPTIONS: dict[str, type[Settings]] = {
    "bald": NoOptions, "bsq": BsqOptions, "ceal": CealOptions, "claspe": ClaspeOptions, "coreset": NoOptions,
    "coverage_then_uncertainty": CoverageThenUncertaintyOptions, "entropy": NoOptions,
    "focannot": FocAnnotOptions, "full": NoOptions, "label_propagation": LabelPropagationOptions,
    "maxherding": MaxHerdingOptions, "mc_variance": NoOptions, "powerbald": PowerBaldOptions, "random": NoOptions,
    "random_fg": NoOptions, "ripu": RipuOptions, "stochastic_batches": StochasticBatchesOptions,
    "suggestive": SuggestiveOptions, "typiclust": TypiclustOptions,
}


def unknown_strategy(name: str) -> str:
    """The problem with a strategy name that is not one, listing the valid ones."""
    return f"unknown strategy {name!r} (valid: {', '.join(STRATEGY_OPTIONS)})"


class QueryConfig(Settings):
    strategy: str = "coverage_then_uncertainty"
    budget_fraction: float = Field(0.05, gt=0, le=1)
    budget_pixels: int | None = None
    mc_passes: int = Field(8, ge=1)
    batch_size: int = Field(16, ge=1)
    # per-pixel uncertainty -> region score: mean over its pixels, or mean of its top top_fraction pixels
    reduction: Literal["mean", "top"] = "mean"
    top_fraction: float = Field(0.1, gt=0, le=1)
    # query with a model that collapsed (one class everywhere on validation, or val Dice 0); default: the round stops
    allow_collapsed_model: bool = False
    # share of each round's budget a campaign also requests as uniformly random control regions, which
    # the annotators cannot tell apart; they estimate the model's Dice on the unlabeled pool (0: none)
    control_fraction: float = Field(0.1, ge=0, lt=1)
    # per strategy name, that strategy's options: {focannot: {lam: 0.5}, ...}; checked by STRATEGY_OPTIONS
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # MC-dropout scoring of the pool: in the query's process (null), on a temporary Dask cluster on this
    # machine (local) or on the Dask scheduler at tcp://host:port; shard_size regions per shard (a task)
    cluster: str | None = None
    shard_size: int = Field(256, ge=1)

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, name: str) -> str:
        if name not in STRATEGY_OPTIONS:
            raise ValueError(unknown_strategy(name))
        return name

    @field_validator("options")
    @classmethod
    def _known_options(cls, options: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Every entry is checked against the options model of its strategy and kept as given (a dump writes
        back only what was set); a problem names its full key, ``query.options.<strategy>.<option>``."""
        for name, values in options.items():
            if name not in STRATEGY_OPTIONS:
                raise ConfigError(f"query.options.{name}: {unknown_strategy(name)}")
            build(STRATEGY_OPTIONS[name], values, f"query.options.{name}")
        return options

    @field_validator("cluster")
    @classmethod
    def _cluster(cls, cluster: str | None) -> str | None:
        address = r"tcp://[A-Za-z0-9.\-\[\]:]+:\d+"
        if cluster is not None and cluster != "local" and not re.fullmatch(address, cluster):
            raise ValueError(f"expected null, local or a Dask scheduler address tcp://host:port, got {cluster!r}")
        return cluster


class OracleConfig(Settings):
    """Who answers the label requests: the ``simulated`` annotator (ground truth), a ``human`` handing in
    masks or a tool's export, or ``labelstudio``: a live Label Studio server at ``labelstudio_url``, where the
    query step fills a project with the round's tasks and ``activeseg labels pull`` fetches the annotations.
    Its API token is read from the environment variable named by ``labelstudio_token_env`` only, never
    from params."""

    kind: Literal["simulated", "human", "labelstudio"] = "simulated"
    allow_empty_masks: bool = True
    max_file_bytes: int = 20_000_000
    timeout_hours: float = Field(168.0, gt=0)
    labelstudio_url: str | None = None
    labelstudio_token_env: str = Field("LABEL_STUDIO_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    @model_validator(mode="after")
    def _labelstudio_url(self) -> "OracleConfig":
        url = self.labelstudio_url
        if self.kind == "labelstudio" and not url:
            raise ValueError("labelstudio_url: required with oracle.kind labelstudio (e.g. http://127.0.0.1:8080)")
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError(f"labelstudio_url: expected an http:// or https:// URL, got {url!r}")
        return self


class EvaluateConfig(Settings):
    split: Literal["val", "test"] = "test"


class TrackingConfig(Settings):
    mlflow: bool = True
    uri: str | None = None
    experiment: str = "activeseg"


class CampaignConfig(Settings):
    """Stop rules of a campaign, checked before each round (besides ``rounds``)."""

    budget_pixels: int | None = Field(None, gt=0)  # stop once this many pixels are labeled (initial set included)
    budget_fraction: float | None = Field(None, gt=0, le=1)  # or this fraction of the training pool
    plateau_rounds: int = Field(0, ge=0)  # stop when test Dice gained less than plateau_delta over the last N rounds (0: off)
    plateau_delta: float = Field(0.005, ge=0)
    # the Dice the plateau rule reads: the evaluation split's, or the control regions' estimate on the pool
    plateau_on: Literal["test", "control"] = "test"
    # a reviewer may not approve a batch they annotated (None: on for oracle.kind human | labelstudio)
    four_eyes: bool | None = None
    require_signatures: bool = False  # refuse unsigned human decisions (submit, approve, reject, revoke, access)


class StorageConfig(Settings):
    """Retries of the object store and of DVC push/pull when they do not answer: ``retries`` more attempts
    after the first, waiting ``retry_seconds``, then twice as long before each next one."""

    retries: int = Field(3, ge=0)
    retry_seconds: float = Field(1.0, ge=0)


class ScheduleConfig(Settings):
    """When the worker starts rounds by itself (standard 5-field cron, UTC); None: only on demand."""

    cron: str | None = None

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, cron: str | None) -> str | None:
        if cron is not None and len(cron.split()) != 5:
            raise ValueError(f"expected 5 fields (minute hour day month weekday), got {cron!r}")
        return cron


class Config(Settings):
    data: DataConfig = Field(default_factory=DataConfig)
    partition: PartitionConfig = Field(default_factory=PartitionConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    query: QueryConfig = Field(default_factory=QueryConfig)
    oracle: OracleConfig = Field(default_factory=OracleConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    campaign: CampaignConfig = Field(default_factory=CampaignConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    rounds: int = Field(5, ge=1)

    @model_validator(mode="after")
    def _crop_fits_the_network(self) -> Config:
        step = 2 ** self.model.depth
        if self.train.crop % step:
            raise ValueError(f"train.crop: must be a multiple of 2**model.depth = {step}")
        if self.pretrain.crop % step:
            raise ValueError(f"pretrain.crop: must be a multiple of 2**model.depth = {step}")
        return self

    @model_validator(mode="after")
    def _initial_strategy_has_embeddings(self) -> Config:
        if initial_method(self, self.query.strategy) != "random" and not self.pretrain.enabled:
            raise ValueError(f"partition.initial_strategy: {self.partition.initial_strategy!r} picks from the pool's "
                             "region embeddings by the pretrained encoder; set pretrain.enabled: true "
                             "(or partition.initial_strategy: random)")
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def flat(self) -> dict[str, Any]:
        """``{"train.patience": 4, ...}``: handy for MLflow params."""
        return _flatten(self.to_dict())


def initial_method(cfg: Config, strategy: str) -> str:
    """How the initial labeled set of a campaign with query strategy ``strategy`` is chosen: random,
    typiclust or maxherding (``partition.initial_strategy``, with ``own`` resolved for the strategy: random
    without pretraining, which the embeddings come from)."""
    method = cfg.partition.initial_strategy
    if method != "own":
        return method
    if not cfg.pretrain.enabled:  # the strategy's own start needs the pool's embeddings
        return "random"
    if strategy == "coverage_then_uncertainty":
        return build(CoverageThenUncertaintyOptions, cfg.query.options.get(strategy) or {},
                     f"query.options.{strategy}").coverage
    return strategy if strategy in ("typiclust", "maxherding") else "random"


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


S = TypeVar("S", bound=BaseModel)

# pydantic error type -> what the key expects
_EXPECTED = {"int_type": "int", "float_type": "a number", "bool_type": "true or false", "string_type": "a string",
             "model_type": "a mapping", "dict_type": "a mapping"}


def build(model: type[S], data: dict[str, Any], prefix: str = "") -> S:
    """``model`` validated from ``data``; a problem becomes a :class:`ConfigError` naming the dotted key
    (``prefix``, e.g. ``"query.options.bsq"``, then the location inside ``data``)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_message(exc.errors()[0], model, prefix)) from None


def _message(error: ErrorDetails, model: type[BaseModel], prefix: str = "") -> str:
    """One pydantic error as ``dotted.key: problem``, with the allowed values or keys where known."""
    loc = [str(part) for part in error["loc"]]
    key = ".".join([prefix, *loc] if prefix else loc)
    value = error["input"]
    kind = error["type"]
    field = _field_at(model, loc)
    if kind in _EXPECTED:
        problem = f"expected {_EXPECTED[kind]}, got {value!r}"
    elif kind == "extra_forbidden":
        parent = _model_at(model, loc[:-1])
        valid = ", ".join(sorted(parent.model_fields)) if parent else ""
        problem = f"unknown key (valid keys here: {valid or 'none'})"
    elif kind == "literal_error" and field is not None:
        problem = f"expected one of {list(typing.get_args(field.annotation))}, got {value!r}"
    elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal") and field is not None:
        problem = f"{_bounds(field)}, got {value!r}"
    elif kind == "value_error" and isinstance(error["ctx"]["error"], ConfigError):
        return str(error["ctx"]["error"])  # from a nested build(), which names its own key
    elif kind == "value_error":
        problem = str(error["ctx"]["error"])
    else:
        problem = f"{error['msg']}, got {value!r}"
    return f"{key}: {problem}" if key else problem


def _model_at(model: type[BaseModel], loc: list[str]) -> type[BaseModel] | None:
    """The settings model found at ``loc`` inside ``model`` (None where the location is no model)."""
    for part in loc:
        field = model.model_fields.get(part)
        annotation = field.annotation if field is not None else None
        if typing.get_origin(annotation) is not None or not (isinstance(annotation, type)
                                                             and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _field_at(model: type[BaseModel], loc: list[str]) -> FieldInfo | None:
    parent = _model_at(model, loc[:-1]) if loc else None
    return parent.model_fields.get(loc[-1]) if parent else None


def _bounds(field: FieldInfo) -> str:
    """A field's numeric constraints in words: ``must be in [0, 1)``, ``must be at least 1``, ..."""
    c = {name: getattr(m, name) for m in field.metadata for name in ("gt", "ge", "lt", "le") if hasattr(m, name)}
    low = f"[{c['ge']}" if "ge" in c else f"({c['gt']}" if "gt" in c else None
    high = f"{c['le']}]" if "le" in c else f"{c['lt']})" if "lt" in c else None
    if low and high:
        return f"must be in {low}, {high}"
    if c.get("gt") == 0 and not high:
        return "must be positive"
    if c.get("ge") == 0 and not high:
        return "must not be negative"
    if "ge" in c:
        return f"must be at least {c['ge']}"
    if "gt" in c:
        return f"must be greater than {c['gt']}"
    return f"must be at most {c['le']}" if "le" in c else f"must be less than {c['lt']}"


class YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading ``1e-4`` / ``3E5`` as floats as YAML 1.2 does (YAML 1.1, PyYAML's
    default, wants a dot: ``1.0e-4``), so ``--set train.lr=1e-4`` and such a params.yaml line work."""


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$|^[-+]?(?:[0-9][0-9_]*)?\.[0-9_]+(?:[eE][-+]?[0-9]+)?$"
               r"|^[-+]?[0-9][0-9_]*\.[0-9_]*$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."))


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.patience=3"`` -> ``(["train", "patience"], 3)``; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key.path=value")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"--set {text!r}: empty key")
    return path, yaml.load(raw, Loader=YamlLoader) if raw.strip() else None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {text!r}: {part} is not a section")
        node[path[-1]] = value
    return data


def from_dict(data: dict[str, Any]) -> Config:
    return build(Config, data)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                overrides_from: str = "--set") -> Config:
    """Load ``params.yaml`` (or the defaults when ``path`` is None) and apply ``--set`` overrides. A problem
    of the file names the file; one that only the overrides bring names ``overrides_from`` (the
    command-line options that gave them), not the file (without a file, messages carry no prefix)."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: parameter file not found")
        try:
            loaded = yaml.load(path.read_text(), Loader=YamlLoader) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of sections at the top level")
        data = loaded
    if path is None:
        return _checked(apply_overrides(data, overrides or []), "")
    _checked(copy.deepcopy(data), f"{path}: ")
    return _checked(apply_overrides(data, overrides or []), f"{overrides_from}: " if overrides else f"{path}: ")


def _checked(data: dict[str, Any], where: str) -> Config:
    """The settings of ``data``, or a ConfigError whose message starts with ``where``."""
    try:
        return from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{where}{exc}") from None


def dump_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
