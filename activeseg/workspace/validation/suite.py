"""Great Expectations suites for the dataset and for every returned label batch, as plain code.

Each suite turns the files into facts, one pandas row per file (``name`` identifies the row), plus a
one-row table for facts about the whole batch or split, and checks them with GX expectations. A
failed expectation becomes one reason per offending row, a sentence naming the file::

    syn-003_y0032_x0000_32x32.png: 3 channels, a mask has one

The expectation behind each reason (:attr:`ValidationReport.checks`, e.g.
``expect_column_values_to_be_in_set(channels)``) and the GX validation results
(:attr:`ValidationReport.result`) are kept as JSON in the quarantine report or the round's record.

This module: the runner shared by the two suites and the facts both read from mask files
(:mod:`.dataset`, :mod:`.labels`).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from PIL import Image

from activeseg.core.errors import MAX_PIXELS

if TYPE_CHECKING:
    import pandas as pd  # imported where a table is built: only a process that validates pays for it

SAFE_STEM = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
RESULT_FORMAT = {"result_format": "COMPLETE", "unexpected_index_column_names": ["name"]}


class Entry(Protocol):
    """One entry of a label batch (see :class:`activeseg.workspace.exchange.batches.BatchEntry`)."""

    name: str
    kind: str
    size: int
    data: bytes | None


@dataclass
class Check:
    """One expectation and how to word a row that fails it."""

    expectation: Any
    message: Callable[[dict], str]


@dataclass
class ValidationReport:
    """A suite's outcome: the reasons (sentences), the GX expectation behind each (``checks``, in the
    same order) and the GX results by table."""

    suite: str
    success: bool
    reasons: list[str] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)
    checks: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"suite": self.suite, "success": self.success, "reasons": self.reasons, "checks": self.checks,
                "gx_result": self.result}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ValidationReport":
        return cls(data["suite"], data["success"], data["reasons"], data["gx_result"], data.get("checks", []))


class ValidationFailed(ValueError):
    """Data failed a suite; the message lists every file and what is wrong with it."""

    def __init__(self, what: str, report: ValidationReport):
        self.report = report
        shown = report.reasons[:50]
        more = f"\n  ... and {len(report.reasons) - 50} more" if len(report.reasons) > 50 else ""
        super().__init__(f"{what} failed validation ({report.suite}):\n  " + "\n  ".join(shown) + more)


_CONTEXT = None


def warm_up() -> None:
    """Import Great Expectations and create this process's context now (seconds), so that a long-lived
    process that validates batches later (a worker playing the simulated annotator) does not pay for it
    in the middle of a round."""
    _context()


def _context():
    """One ephemeral GX context per process, without progress bars."""
    global _CONTEXT
    if _CONTEXT is None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        _CONTEXT = gx.get_context(mode="ephemeral")
        _CONTEXT.variables.progress_bars = ProgressBarsConfig(globally=False)
        _CONTEXT.data_sources.add_pandas("activeseg")
    return _CONTEXT


def _validate(suite_name: str, table: str, df: pd.DataFrame,
              checks: list[Check]) -> tuple[list[str], list[str], dict]:
    """The reasons a table fails its checks, the expectation behind each, and the GX results."""
    import great_expectations as gx

    source = _context().data_sources.get("activeseg")
    asset_name = f"{suite_name}.{table}"
    try:
        asset = source.get_asset(asset_name)
    except LookupError:
        asset = source.add_dataframe_asset(asset_name)
        asset.add_batch_definition_whole_dataframe("all")
    batch = asset.get_batch_definition("all").get_batch(batch_parameters={"dataframe": df})
    suite = gx.ExpectationSuite(name=asset_name)
    for i, check in enumerate(checks):
        check.expectation.meta = {"check": i}
        suite.add_expectation(check.expectation)
    result = batch.validate(suite, result_format=RESULT_FORMAT).to_json_dict()
    by_name = df.drop_duplicates("name").set_index("name")
    reasons, failed = [], []
    for item in result["results"]:
        if item["success"]:
            continue
        config = item["expectation_config"]
        check = checks[config["meta"]["check"]]
        kwargs = config["kwargs"]
        columns = kwargs.get("column") or f"{kwargs.get('column_A')}, {kwargs.get('column_B')}"
        label = f"{config['type']}({columns})"
        if item.get("exception_info", {}).get("raised_exception"):
            reasons.append(f"{table}: the check of {columns} could not run: "
                           f"{item['exception_info']['exception_message']}")
            failed.append(label)
            continue
        for row in item["result"].get("unexpected_index_list") or []:
            full = {"name": row["name"], **by_name.loc[row["name"]].to_dict()}
            reasons.append(f"{row['name']}: {check.message(full)}")
            failed.append(label)
    return reasons, failed, result


def run_suite(suite_name: str, tables: dict[str, tuple[pd.DataFrame, list[Check]]]) -> ValidationReport:
    """Validate each table with its checks; a report with every reason, the check behind it and the GX
    results by table."""
    report = ValidationReport(suite_name, True)
    for table, (df, checks) in tables.items():
        reasons, failed, result = _validate(suite_name, table, df, checks)
        report.reasons += reasons
        report.checks += failed
        report.result[table] = result
        report.success = report.success and result["success"]
    return report


def num_text(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def pixels_outside_classes(mask: np.ndarray, classes: int, binary_255: bool) -> int:
    """Pixels of an (H, W) mask whose value is no class id; with ``binary_255`` a {0, 255} mask counts
    as binary and has none."""
    values = np.unique(mask)
    if binary_255 and set(values.tolist()) <= {0, 255}:
        return 0
    return int(((mask < 0) | (mask >= classes)).sum())


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) as the PNG's IHDR chunk declares them, read from the bytes without decoding;
    None when the bytes do not start like a PNG."""
    if data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR" or len(data) < 24:
        return None
    return struct.unpack(">II", data[16:24])


def decode_png(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray | None:
    """The pixel array of PNG bytes ((H, W) or (H, W, C)), None when not a readable PNG or when its
    header declares more than ``max_pixels`` pixels (then it is not decoded). Palette PNGs give their
    indices, 16-bit PNGs their values."""
    declared = png_header_size(data)
    if declared is None or declared[0] * declared[1] > max_pixels:
        return None
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format != "PNG":
                return None
            img.load()
            return np.asarray(img)
    except Exception:  # Pillow raises many kinds for broken files
        return None


def size_text(shape: tuple[int, ...]) -> str:
    """A size as the messages say it: ``height x width`` (``shape`` starts with the height, as an array's)."""
    return f"{shape[0]} x {shape[1]}"
