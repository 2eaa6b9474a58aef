"""The page: table cells, no machine path (not even of the folders a rejected batch came from), masks
handed back unchanged and which prediction the red marks compare with, the comparison page, the reference
simulation, and no credential of an S3 store in the report (nor in the copy it puts in the store)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from activeseg.cli.report import reference_runs
from activeseg.report.page import (STORE_KEY, data_uri, duration, number, scrub, write_campaign_report,
                                   write_comparison_report)
from activeseg.workspace import Workspace
from tests.conftest import TINY
from tests.report.conftest import data_uris_removed, machine_paths, requested_truth
from tests.workspace.s3 import s3_bucket, s3_endpoint  # noqa: F401  (fixtures)


def test_table_cells() -> None:
    assert [number(None), number(1234567), number(0.123456), number(2.5, 1)] == ["-", "1,234,567", "0.1235", "2.5"]
    assert [duration(None), duration(45.4), duration(600), duration(9000)] == ["-", "45 s", "10 min", "2.5 h"]


def test_scrub_replaces_machine_paths_outside_the_images_only(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    image = "data:image/png;base64," + base64.b64encode(str(Path.home()).encode() * 3).decode()
    inside = f"data:image/png;base64,AAAA{Path.home()}/x"  # base64 characters only: an image, left as it is
    text = f"<p>{root}/labels and {Path.home()}/notes</p><img src=\"{image}\"><img src=\"{inside}\">"
    assert scrub(text, root) == f"<p><workspace>/labels and ~/notes</p><img src=\"{image}\"><img src=\"{inside}\">"


@pytest.fixture(scope="module")
def page(campaign: Workspace, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The campaign's report page, without its embedded images."""
    return data_uris_removed(write_campaign_report(campaign, tmp_path_factory.mktemp("page") / "r.html").read_text())


def test_the_page_names_no_folder_of_the_machine(campaign: Workspace, page: str) -> None:
    batches = campaign.root.parent  # the rejected folder batch and QuPath export came from folders in it
    assert (batches / "bad-batch").is_dir() and (batches / "broken").is_dir()
    assert str(batches) not in page and not [p for p in machine_paths(campaign) if p in page]
    assert "<li>export.geojson: malformed JSON at line 1, column 2: Expecting property name" in page
    assert page.count("<td><code>quarantine/round-001/") == 2  # store keys, relative to the store


def test_masks_handed_back_unchanged_are_marked_and_the_red_says_which_prediction(campaign: Workspace,
                                                                                   page: str) -> None:
    ids = [r.id for r in campaign.record(1).queried.regions]
    n = len(ids)
    masks = f"{n - 1} mask" + ("" if n == 2 else "s")
    assert f"<h3>Round 1: {n} regions, {masks} handed back as the pre-annotation, unchanged</h3>" in page
    figures = dict(re.findall(r'<figure class="region" id="region-1-([^"]+)">(.*?)</figure>', page, re.S))
    marked = [i for i in ids if '<span class="unchanged">unchanged</span>' in figures[i]]
    changed = requested_truth(campaign, 1)[0].items[-1].id  # the request's last region was corrected
    assert marked == [i for i in ids if i != changed] and page.count('class="unchanged"') == n - 1
    assert "Model wrong (red) against\nthe pre-annotation exported for qupath (round 1's model, dropout off)." in page
    assert page.count("Model wrong (red) against") == 1  # round 2 has no labels yet
    assert f"<h3>Round 2: {len(campaign.record(2).queried.regions)} regions</h3>" in page


def test_a_reference_must_be_a_simulation_with_random_runs(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"summary": {}}))
    with pytest.raises(ValueError, match=f"{path}: not a simulation's results.json"):
        reference_runs(path)
    path.write_text(json.dumps({"runs": [{"strategy": "entropy", "round": 0}]}))
    with pytest.raises(ValueError, match=f"{path}: the simulation has no 'random' runs"):
        reference_runs(path)
    runs = [{"strategy": "random", "round": 0}]
    path.write_text(json.dumps({"runs": runs}))
    assert reference_runs(path) == runs and reference_runs(None) == []


def test_the_comparison_page_embeds_the_curves_and_the_table(tmp_path: Path) -> None:
    plot = tmp_path / "learning_curves.png"
    plot.write_bytes(b"\x89PNG not really")
    out = write_comparison_report("benchmark", plot, ("strategy", "saving"), [("random", "-"), ("bsq", "31%")],
                                  [f"warning: a note about {tmp_path}/x"], tmp_path / "report.html")
    html = out.read_text()
    assert data_uri(plot.read_bytes()) in html
    assert "<td>bsq</td><td>31%</td>" in html and "<th>strategy</th><th>saving</th>" in html
    assert str(tmp_path) not in html and "a note about <workspace>/x" in html


def test_no_credential_of_an_s3_store_reaches_the_report(tmp_path: Path, s3_endpoint: str, s3_bucket: str) -> None:
    ws = Workspace.init(tmp_path / "ws", "synthetic", remote=f"s3://{s3_bucket}/campaign", endpoint=s3_endpoint,
                        overrides=TINY)
    path = write_campaign_report(ws, upload=True)
    html = path.read_text()
    assert path == ws.root / "report.html" and ws.store.get_bytes(STORE_KEY).decode() == html
    assert "report.html" not in ws.git("status", "--porcelain")  # git-ignored
    for secret in ("activeseg-test-key", "activeseg-test-secret"):
        assert secret not in html
    visible = data_uris_removed(html)
    assert not [p for p in machine_paths(ws) if p in visible]
    assert 'id="regions"' in html and "No round has queried yet." in html
