"""The ``activeseg`` command line: the top layer, the one that may reach the Prefect flows."""

from activeseg.cli.main import main

__all__ = ["main"]
