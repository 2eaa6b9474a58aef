"""A process imports only what it needs (issue 13, the lighter round path): the worker, the flows and
the CLI load without the heavy libraries (PyTorch, Great Expectations, MLflow, DVC, matplotlib,
scikit-learn/SciPy, pandas, Dask); a flow-run process pays for one only inside the step that validates,
tracks, computes or draws. Checked in a fresh interpreter, where nothing was imported before."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "great_expectations", "mlflow", "dvc", "matplotlib", "sklearn", "scipy", "pandas", "dask",
         "distributed", "skimage", "tiffslide", "jinja2")
LIGHT_MODULES = ("flows.worker", "flows.al_round", "flows.campaign", "tasks.steps", "activeseg.cli.main",
                 "activeseg.orchestration.status", "activeseg.workspace.workspace")


def test_the_worker_the_flows_and_the_cli_import_no_heavy_library():
    code = (f"import importlib, json, sys\nfor m in {LIGHT_MODULES!r}: importlib.import_module(m)\n"
            f"print(json.dumps(sorted(h for h in {HEAVY!r} if h in sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
