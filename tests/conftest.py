"""Shared fixtures (a tiny synthetic dataset and a tiny, fast configuration) and the test marks."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
import torch

from activeseg.core.config import Config, load_config
from activeseg.core.data import Dataset, load_dataset
from activeseg.core.synthetic import synthesize

torch.set_num_threads(1)  # tests run two workers on two cores

TESTS = Path(__file__).resolve().parent
SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"

TINY = [
    "rounds=3",
    "data.synthetic.n=10",
    "data.synthetic.size=64",
    "partition.side=32",
    "partition.initial_labeled=3",
    "model.width=4",
    "model.depth=2",
    "train.min_steps=4",
    "train.max_steps=8",
    "train.steps_per_epoch=4",
    "train.batch_size=4",
    "train.crop=32",
    "pretrain.steps=4",
    "pretrain.batch_size=2",
    "pretrain.crop=32",
    "query.mc_passes=3",
    "query.allow_collapsed_model=true",  # a model this small and short-trained often predicts background only
    "tracking.mlflow=false",
]


def bomb_png(width: int, height: int) -> bytes:
    """A real decompression bomb: a valid grey 8-bit PNG of ``width`` x ``height`` zeros, compressed to a
    tiny file (about 1 KB per million pixels); decoding it would take ``width * height`` bytes."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    packer, row = zlib.compressobj(9), bytes(width + 1)  # each row: filter byte 0, then the pixels
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture
def tiny_cfg() -> Config:
    return load_config(None, list(TINY))


@pytest.fixture
def tiny_data_dir(tmp_path: Path) -> Path:
    return synthesize(tmp_path / "data", n=10, size=64, seed=0)


@pytest.fixture
def tiny_dataset(tiny_data_dir: Path) -> Dataset:
    return load_dataset(tiny_data_dir, classes=2)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--matrix", action="store_true",
                     help="also run the tests marked `matrix` (fault-matrix rows that take minutes)")
    parser.addoption("--lab", action="store_true",
                     help="also run the tests marked `lab`: `make lab`'s stack (PostgreSQL, Prefect, MLflow, S3, Dask)")


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """With --lab, xdist hands out whole modules (`--dist loadscope`): a lab module's tests share one stack
    (a module fixture) and run in order on one xdist worker, instead of each worker starting a stack."""
    if config.getoption("--lab"):
        from xdist.scheduler import LoadScopeScheduling

        return LoadScopeScheduling(config, log)
    return None


# The marks of pyproject.toml, by folder, file, or file::test below tests/. `prefect`: needs Prefect (imports
# flows or tasks, or runs a server); `slow`: took over ~5 s on 2 cores (`pytest --durations`); `matrix`: a
# fault-matrix row that takes minutes, skipped unless pytest runs with --matrix (benchmarks/fault_matrix.py).
MARKS = {
    "prefect": {"flows", "orchestration/test_server.py", "test_infra.py"},
    "slow": {
        "flows/test_faults.py",
        "flows/test_cluster_scoring.py",
        "flows/test_server_restart.py",
        "flows/test_al_round.py",
        "flows/test_suspend_resume.py",
        "flows/test_campaign.py::test_demo_runs_rounds_that_suspend_and_resume_then_stops_what_it_started",
        "workspace/test_workspace.py",
        "workspace/test_controls.py",
        "workspace/test_pretrain.py",
        "workspace/test_outage.py::test_a_round_survives_store_outages",
        "workspace/test_audit.py",
        "workspace/test_collapsed_model.py",
        "workspace/test_bad_input.py",
        "workspace/test_credentials.py",
        "workspace/test_kill.py",
        "workspace/exchange/test_labelstudio_live.py",
        "workspace/exchange/formats/test_live_settings.py::test_approve_with_nothing_staged_pulls_from_label_studio_first",
        "flows/test_worker_recovery.py",
        "flows/test_forkserver.py",
        "orchestration/test_server.py::test_start_status_stop_restart",
        "loop/test_simulate.py::test_mlflow_logs_every_training_run",
        "loop/test_protocol.py::test_simulation_reads_the_test_split_only_to_evaluate",
        "core/test_real_data.py::test_isbi2012_loads_partitions_trains_and_scores",
        "report/test_campaign.py",
        "report/test_browser.py",
        "report/test_page.py::test_no_credential_of_an_s3_store_reaches_the_report",
        "model/test_distributed.py::test_two_gloo_processes_follow_one_process_on_the_same_global_batch",
        "core/test_slides.py::test_simulated_campaign_on_two_slides",
        "workspace/test_slide_workspace.py",
        "model/test_registry.py",
        "model/test_prediction.py::test_tiled_prediction_equals_whole_image_inference_away_from_the_seams",
        "cli/test_model.py",
    },
    # test_labelstudio_live: a real Label Studio server; `make labelstudio-venv` installs it first (about 2 min)
    "matrix": {"flows/test_faults.py", "flows/test_server_restart.py", "workspace/exchange/test_labelstudio_live.py"},
    # `lab`: starts and stops the whole lab stack of `make lab` (about a minute); skipped unless pytest runs with --lab
    "lab": {"test_lab_stack.py"},
}


def selectors(item: pytest.Item) -> set[str]:
    """The entries of ``MARKS`` that name this test: each folder above it, its file, and file::test."""
    path = item.path.relative_to(TESTS)
    test = getattr(item, "originalname", item.name)
    return {p.as_posix() for p in path.parents if p != Path(".")} | {path.as_posix(), f"{path.as_posix()}::{test}"}


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason="matrix row (takes minutes): run with --matrix (benchmarks/fault_matrix.py; Label "
                                   "Studio: make labelstudio-venv)")
    for item in items:
        for mark, entries in MARKS.items():
            if item.path.is_relative_to(TESTS) and entries & selectors(item):
                item.add_marker(mark)
        if "matrix" in item.keywords and not config.getoption("--matrix"):
            item.add_marker(skip)
        if "lab" in item.keywords and not config.getoption("--lab"):
            item.add_marker(pytest.mark.skip(reason="the lab stack of `make lab` (about a minute): run with --lab"))
