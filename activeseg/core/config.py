"""Typed configuration loaded from ``params.yaml``.

Every stage of the pipeline has its own section (data, partition, model, train, query, oracle,
evaluate, tracking, campaign, schedule). Unknown keys and values of the wrong type fail with a :class:`ConfigError`
that names the dotted key, e.g. ``train.epochs: expected int, got 'ten'``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A parameter file or override is wrong; the message names the key."""


@dataclass
class SplitConfig:
    train: float = 0.6
    val: float = 0.2
    test: float = 0.2


@dataclass
class SyntheticConfig:
    n: int = 24
    size: int = 128
    seed: int = 0


@dataclass
class DataConfig:
    dataset: str = "synthetic"
    classes: int = 2
    split: SplitConfig = field(default_factory=SplitConfig)
    seed: int = 0
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class PartitionConfig:
    granularity: Literal["image", "patch"] = "patch"
    side: int = 64
    overlap: float = 0.5
    initial_labeled: int = 4


@dataclass
class ModelConfig:
    width: int = 16
    depth: int = 3
    dropout: float = 0.2


@dataclass
class TrainConfig:
    epochs: int = 6
    samples_per_epoch: int = 64
    batch_size: int = 8
    crop: int = 64
    lr: float = 0.003
    weight_decay: float = 0.0
    dice_weight: float = 1.0
    pseudo_weight: float = 0.5
    mode: Literal["scratch", "finetune"] = "scratch"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0


@dataclass
class QueryConfig:
    strategy: str = "mc_variance"
    budget_fraction: float = 0.05
    budget_pixels: int | None = None
    mc_passes: int = 8
    batch_size: int = 16
    # per strategy name, that strategy's options: {focannot: {lam: 0.5}, ...}
    options: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class OracleConfig:
    kind: Literal["simulated", "human"] = "simulated"
    allow_empty_masks: bool = True
    max_file_bytes: int = 20_000_000
    timeout_hours: float = 168.0


@dataclass
class EvaluateConfig:
    split: Literal["val", "test"] = "test"


@dataclass
class TrackingConfig:
    mlflow: bool = True
    uri: str | None = None
    experiment: str = "activeseg"


@dataclass
class CampaignConfig:
    """Stop rules of a campaign, checked before each round (besides ``rounds``)."""

    budget_pixels: int | None = None  # stop once this many pixels are labeled (initial set included)
    budget_fraction: float | None = None  # or this fraction of the training pool
    plateau_rounds: int = 0  # stop when test Dice gained less than plateau_delta over the last N rounds (0: off)
    plateau_delta: float = 0.005


@dataclass
class ScheduleConfig:
    """When the worker starts rounds by itself (standard 5-field cron, UTC); None: only on demand."""

    cron: str | None = None


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    query: QueryConfig = field(default_factory=QueryConfig)
    oracle: OracleConfig = field(default_factory=OracleConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    campaign: CampaignConfig = field(default_factory=CampaignConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    rounds: int = 5

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """``{"train.epochs": 6, ...}``: handy for MLflow params."""
        return _flatten(self.to_dict())


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return _build(tp, value, key + ".")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: unexpected {value!r}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{key}: expected one of {list(allowed)}, got {value!r}")
        return value
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected int, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {tp}")


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"{prefix}{unknown[0]}: unknown key (valid keys here: {', '.join(sorted(names))})"
        )
    kwargs = {k: _coerce(v, hints[k], f"{prefix}{k}") for k, v in data.items()}
    return cls(**kwargs)


def _check(cfg: Config) -> None:
    positive = {
        "data.classes": cfg.data.classes - 1,
        "partition.side": cfg.partition.side,
        "model.width": cfg.model.width,
        "model.depth": cfg.model.depth,
        "train.batch_size": cfg.train.batch_size,
        "train.crop": cfg.train.crop,
        "train.samples_per_epoch": cfg.train.samples_per_epoch,
        "query.mc_passes": cfg.query.mc_passes,
        "query.batch_size": cfg.query.batch_size,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key}: must be positive (data.classes at least 2)")
    if not 0 <= cfg.partition.overlap < 1:
        raise ConfigError("partition.overlap: must be in [0, 1)")
    if not 0 <= cfg.model.dropout < 1:
        raise ConfigError("model.dropout: must be in [0, 1)")
    if not 0 < cfg.query.budget_fraction <= 1:
        raise ConfigError("query.budget_fraction: must be in (0, 1]")
    split = cfg.data.split
    if min(split.train, split.val, split.test) <= 0 or abs(split.train + split.val + split.test - 1) > 1e-6:
        raise ConfigError("data.split: train, val and test must be positive and sum to 1")
    if cfg.train.crop % (2 ** cfg.model.depth):
        raise ConfigError(f"train.crop: must be a multiple of 2**model.depth = {2 ** cfg.model.depth}")
    if cfg.rounds < 1:
        raise ConfigError("rounds: must be at least 1")
    if cfg.oracle.timeout_hours <= 0:
        raise ConfigError("oracle.timeout_hours: must be positive")
    c = cfg.campaign
    if c.budget_fraction is not None and not 0 < c.budget_fraction <= 1:
        raise ConfigError("campaign.budget_fraction: must be in (0, 1]")
    if (c.budget_pixels is not None and c.budget_pixels <= 0) or c.plateau_rounds < 0 or c.plateau_delta < 0:
        raise ConfigError("campaign: budget_pixels must be positive, plateau_rounds and plateau_delta not negative")
    if cfg.schedule.cron is not None and len(cfg.schedule.cron.split()) != 5:
        raise ConfigError(f"schedule.cron: expected 5 fields (minute hour day month weekday), got {cfg.schedule.cron!r}")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.epochs=3"`` -> ``(["train", "epochs"], 3)``; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key.path=value")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"--set {text!r}: empty key")
    return path, yaml.safe_load(raw) if raw.strip() else None


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
    cfg = _build(Config, data)
    _check(cfg)
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load ``params.yaml`` (or the defaults when ``path`` is None) and apply ``--set`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: parameter file not found")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of sections at the top level")
        data = loaded
    apply_overrides(data, overrides or [])
    try:
        return from_dict(data)
    except ConfigError as exc:
        where = f"{path}: " if path is not None else ""
        raise ConfigError(f"{where}{exc}") from None


def dump_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
