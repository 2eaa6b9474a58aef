"""Reading a tool's export safely: plain files only (links refused, size capped), named in errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from activeseg.workspace.exchange.formats.common import MAX_FILE_BYTES, FormatError


def read_bytes(path: Path, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a plain file; a link, a missing file or one over ``max_bytes`` is a FormatError."""
    if path.is_symlink():
        raise FormatError(f"{path}: a symbolic link, never followed")
    if not path.is_file():
        raise FormatError(f"{path}: not a file")
    size = path.stat().st_size
    if size > max_bytes:
        raise FormatError(f"{path}: {size} bytes, over the {max_bytes}-byte cap")
    return path.read_bytes()


def read_json(path: Path) -> Any:
    """A JSON file; malformed JSON is a FormatError naming the file, line and column."""
    try:
        return json.loads(read_bytes(path))
    except json.JSONDecodeError as exc:
        raise FormatError(f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise FormatError(f"{path}: not UTF-8 text ({exc.reason})") from None


def files_in(path: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """``path`` itself when it is a file, else its files (not recursive) with one of ``suffixes``."""
    if path.is_symlink():
        raise FormatError(f"{path}: a symbolic link, never followed")
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FormatError(f"{path}: no such file or folder")
    found = sorted(p for p in path.iterdir() if p.name.lower().endswith(suffixes))
    if not found:
        raise FormatError(f"{path}: no {' or '.join(suffixes)} file in this folder")
    return found


def one_file(path: Path, preferred: str, suffixes: tuple[str, ...]) -> Path:
    """``path`` when it is a file; in a folder, ``preferred`` or else its only file with one of ``suffixes``."""
    if path.is_dir() and not path.is_symlink() and (path / preferred).exists():
        return path / preferred
    found = files_in(path, suffixes)
    if len(found) > 1:
        raise FormatError(f"{path}: several {' or '.join(suffixes)} files ({', '.join(p.name for p in found[:5])}); "
                          "name the one to read")
    return found[0]


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path
