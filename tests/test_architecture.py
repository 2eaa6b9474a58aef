"""The import contracts of pyproject.toml (``[tool.importlinter]``), one test each: the layers of
``activeseg`` import only downwards (inside the workspace: its steps and facade over the label exchange over
its core), the library imports neither Prefect nor ``flows``/``tasks``, the CLI
starts flows and flows call tasks (never the other way round), the production path never imports the
simulation, and no package has an import cycle between its modules. A broken contract fails with
import-linter's report (the offending chain of imports, with line numbers). Also: the test marks of
tests/conftest.py name tests that exist."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import MARKS, TESTS

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def contract_ids() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return [contract["id"] for contract in config["contracts"]]


def test_the_contracts_cover_layers_prefect_and_cycles():
    assert {"layers", "workspace-exchange", "library-without-prefect", "cli-flows-tasks", "acyclic"} <= set(contract_ids())


@pytest.mark.parametrize("contract", contract_ids())
def test_import_contract_is_kept(contract: str):
    result = subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo", "--contract", contract],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"import contract {contract!r} (pyproject.toml) broken:\n{result.stdout}{result.stderr}"


def test_every_marked_test_exists():
    for mark, entries in MARKS.items():
        for entry in entries:
            path, _, test = entry.partition("::")
            assert (TESTS / path).exists(), f"tests/conftest.py MARKS[{mark!r}]: no {path} below tests/"
            if test:
                assert f"def {test}(" in (TESTS / path).read_text(), f"tests/conftest.py MARKS[{mark!r}]: no {entry}"
