"""What the commands print: one console for results (stdout), one for progress and notes (stderr),
and tables that are drawn on a terminal but printed as plain tab-separated lines when piped, so no
path or hash is ever cut."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def say(text: str) -> None:
    """A progress line or note (stderr, so that stdout stays the command's result)."""
    err.print(text, highlight=False, markup=False)


def print_json(result: Any) -> None:
    print(json.dumps(result, indent=1, default=str))


def print_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None, *,
                compact: bool = False) -> None:
    """A table of `rows` (cells shown with str): drawn on a terminal (`compact`: with no border, a rule
    under the header and columns two spaces apart, for a wide table that should fit 80 columns); title,
    header and rows as tab-separated lines otherwise."""
    cells = [[str(cell) for cell in row] for row in rows]
    if not console.is_terminal:
        lines = ([title] if title else []) + ["\t".join(columns)] + ["\t".join(row) for row in cells]
        print("\n".join(lines))
        return
    style = {"box": box.SIMPLE_HEAD, "show_edge": False, "pad_edge": False, "collapse_padding": True}
    table = Table(*columns, title=title, **(style if compact else {}))
    for row in cells:
        table.add_row(*(escape(cell) for cell in row))
    console.print(table)


def count(n: int, noun: str) -> str:
    """``n`` and the noun, plural but for one: "1 file", "3 files", "0 batches"."""
    plural = noun + ("es" if noun.endswith(("s", "sh", "ch", "x")) else "s")
    return f"{n} {noun if n == 1 else plural}"
