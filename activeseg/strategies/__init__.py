"""Query strategies, one module each, registered by name (see ``registry``).

Every module of this package is imported here, so a new strategy only needs its own module with an
``@register``-ed subclass of :class:`Strategy`.
"""

import importlib
import pkgutil

from activeseg.strategies.base import QueryContext, Selection, Strategy, fill_budget
from activeseg.strategies.registry import STRATEGIES, get_strategy, names, register

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base", "registry"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["QueryContext", "Selection", "Strategy", "fill_budget", "STRATEGIES", "get_strategy", "names", "register"]
