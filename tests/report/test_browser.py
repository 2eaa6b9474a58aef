"""The campaign report as a person sees it: written by ``activeseg report``, rendered by headless Chromium
(Debian's ``chromium``; ``make chromium`` installs it, ``make test`` first), its DOM with every section
and one thumbnail per queried region, and a screenshot that is not blank."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from activeseg.cli.main import main
from activeseg.workspace import Workspace
from tests.report.conftest import data_uris_removed, machine_paths

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SECTIONS = ("glance", "learning-curve", "rounds", "regions", "quality")
WINDOW = (1280, 2400)


def chromium(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    if not Path(CHROMIUM).is_file():
        pytest.fail("chromium is not installed: run `make chromium` (make test does)")
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()],
                          capture_output=True, text=True, timeout=120, check=True)


@pytest.fixture(scope="module")
def page(campaign: Workspace, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("page") / "campaign.html"
    assert main(["report", "--workspace", str(campaign.root), "--out", str(out)]) == 0
    return out


def test_every_section_and_one_thumbnail_per_queried_region(campaign: Workspace, page: Path, tmp_path: Path) -> None:
    dom = chromium(page, tmp_path / "profile", "--dump-dom").stdout
    for section in SECTIONS:
        assert re.search(f'<section id="{section}">.*?<h2>.+?</h2>', dom, re.S), section
    thumbnails = re.findall(r'<figure class="region" id="region-(\d+)-([^"]+)">\s*<img class="thumbnail"', dom)
    queried = [(str(n), r.id) for n in (1, 2) for r in campaign.record(n).queried.regions]
    assert thumbnails == queried
    assert dom.count('class="thumbnail"') == len(queried)
    assert dom.count("labels not in yet") == len(campaign.record(2).queried.regions)
    assert dom.count("labels revoked") == 1
    unchanged = campaign.record(1).labels_accepted.reviewed_unchanged
    assert dom.count('<span class="unchanged">unchanged</span>') == len(unchanged) > 0
    assert '<span class="ok">intact</span>' in dom


def test_the_page_shows_no_machine_path(campaign: Workspace, page: Path) -> None:
    visible = data_uris_removed(page.read_text())
    assert not [p for p in machine_paths(campaign) if p in visible]
    assert "<script" not in visible and "http://" not in visible and "https://" not in visible


def test_the_screenshot_is_not_blank(page: Path, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    chromium(page, tmp_path / "profile", f"--screenshot={shot}", f"--window-size={WINDOW[0]},{WINDOW[1]}")
    image = np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("RGB"))
    assert image.shape == (WINDOW[1], WINDOW[0], 3)
    colours = np.unique(image.reshape(-1, 3), axis=0)
    assert len(colours) > 1000  # the thumbnails and the curve, not a blank or error page
    assert (image < 250).any(axis=2).mean() > 0.1  # a tenth of the page is drawn
