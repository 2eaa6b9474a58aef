"""Names in ``params.yaml`` (``query.strategy``) mapped to strategy classes.

The settings check the names and options when they are read, against ``activeseg.core.config.STRATEGY_OPTIONS``
(core sits below this layer and cannot import it); tests/strategies/test_registry.py keeps the two equal."""

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
