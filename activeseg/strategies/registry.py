"""Names in ``params.yaml`` (``query.strategy``) mapped to strategy classes."""

from __future__ import annotations

from typing import Any

from activeseg.core.config import ConfigError
from activeseg.strategies.base import Strategy

STRATEGIES: dict[str, type[Strategy]] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: ``@register`` makes ``cls.name`` usable in ``query.strategy``."""
    STRATEGIES[cls.name] = cls
    return cls


def names() -> list[str]:
    return sorted(STRATEGIES)


def get_strategy(name: str, options: dict[str, Any] | None = None) -> Strategy:
    """An instance of the named strategy; an unknown name lists the valid ones."""
    if name not in STRATEGIES:
        raise ConfigError(f"query.strategy: unknown strategy {name!r} (valid: {', '.join(names())})")
    return STRATEGIES[name](options)


def get_score_strategy(name: str, wrapper: str) -> Strategy:
    """The strategy ``name`` that the strategy ``wrapper`` draws per-region scores from (its option
    ``base``): it must exist, have a ``score`` and not be ``wrapper`` itself."""
    key = f"query.options.{wrapper}.base"
    if name == wrapper:
        raise ConfigError(f"{key}: {wrapper!r} cannot wrap itself")
    base = get_strategy(name)
    if type(base).score is Strategy.score:
        raise ConfigError(f"{key}: {name!r} has no per-sample score to use")
    return base


def check_options(options: dict[str, Any]) -> None:
    """``query.options`` maps strategy names to their options: every key must be a strategy."""
    for name, value in options.items():
        if name not in STRATEGIES:
            raise ConfigError(f"query.options.{name}: not a strategy (valid: {', '.join(names())})")
        if not isinstance(value, dict):
            raise ConfigError(f"query.options.{name}: expected a mapping of options, got {value!r}")
        get_strategy(name, value)
