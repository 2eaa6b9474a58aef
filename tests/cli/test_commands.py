"""The command line as a whole: one error-to-exit-status mapping, every command in the README, tables that
are not cut when piped, and a campaign workspace's commands with no Prefect server running (read-only
ones start none and say so; hints name the path a campaign under Prefect takes)."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path
from uuid import uuid4

import pytest

from activeseg.cli.main import build_parser, exit_status, main
from activeseg.cli.output import print_table
from activeseg.orchestration import server
from activeseg.orchestration.engine import ResumeError
from activeseg.orchestration.guard import RoundError
from activeseg.orchestration.server import ServerError
from activeseg.workspace import BatchRejected, Workspace, WorkspaceError
from activeseg.workspace.creation import write_params
from tests.conftest import TINY
from tests.people import enrol

cli = importlib.import_module("activeseg.cli.main")  # the package's `main` attribute is the function
README = Path(__file__).resolve().parents[2] / "README.md"
PREFECT_PATH = ("`activeseg server start`", "`activeseg worker --background`", "`activeseg round start`")


def test_one_mapping_gives_every_known_error_its_exit_status_and_lets_bugs_through(monkeypatch, capsys):
    assert exit_status(BatchRejected(2, ["a.png: wrong size"], "quarantine/x")) == (1, "rejected")
    for error in (RoundError("r"), ServerError("s"), ResumeError("x"), WorkspaceError("w"), TimeoutError("t"),
                  FileNotFoundError("f")):
        assert exit_status(error) == (2, "error"), error
    assert exit_status(KeyError("a bug")) is None

    def refused(args):
        raise RoundError("round 3: no flow run waits for its labels [really]")

    monkeypatch.setattr(cli, "cmd_strategies", refused)
    assert main(["strategies"]) == 2
    assert "error: round 3: no flow run waits for its labels [really]" in capsys.readouterr().err

    def buggy(args):
        raise KeyError("labels_accepted")

    monkeypatch.setattr(cli, "cmd_strategies", buggy)
    with pytest.raises(KeyError):
        main(["strategies"])


def test_the_readme_lists_every_command():
    text = README.read_text()
    commands = build_parser()._subparsers._group_actions[0].choices
    missing = [name for name in commands if not re.search(rf"\| `activeseg {name}\b", text)]
    assert missing == []


def test_tables_are_plain_tab_separated_lines_when_piped(capsys):
    path = "/very/long/" + "nested/" * 40 + "request.json"
    print_table(("round", "request"), [(1, path)], title="open label requests")
    assert capsys.readouterr().out.splitlines() == ["open label requests", "round\trequest", f"1\t{path}"]
    assert main(["strategies"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("strategy\tneeds model\tdescription")
    assert any(line.startswith("mc_variance\tyes\t") for line in lines) and "━" not in "".join(lines)


def test_init_with_an_unknown_strategy_fails_at_once_listing_the_valid_ones_and_creates_nothing(tmp_path):
    """The real command, in a process of its own: the settings are checked before any work starts."""
    activeseg = Path(sys.executable).parent / "activeseg"
    result = subprocess.run([str(activeseg), "init", "lab", "--set", "query.strategy=nonsense"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().endswith(
        "query.strategy: unknown strategy 'nonsense' (valid: bald, bsq, ceal, claspe, coreset, "
        "coverage_then_uncertainty, entropy, focannot, full, label_propagation, maxherding, mc_variance, powerbald, "
        "random, random_fg, ripu, stochastic_batches, suggestive, typiclust)")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command, args", [
    ("status", []), ("round start", []), ("approve", ["--round", "1", "--by", "pi"]), ("report", []),
    ("labels submit", ["masks", "--annotator", "ann"]), ("audit", [])])
def test_campaign_commands_refuse_params_and_set_saying_where_settings_change(command, args, capsys):
    for option in ("--set", "--params"):
        with pytest.raises(SystemExit) as exited:
            main([*command.split(), *args, option, "train.patience=3"])
        err = capsys.readouterr().err
        assert exited.value.code == 2
        assert f"error: {option}: `activeseg {command}` works on a campaign workspace, whose settings are its " \
               "params.yaml: edit that file to change one" in err
        assert err.rstrip().endswith("--params and --set are taken by data synthesize, strategies, simulate, demo, "
                                     "benchmark, metrics, init, predict")


def test_init_names_set_not_the_params_file_for_a_bad_override(tmp_path, capsys):
    assert main(["init", str(tmp_path / "lab"), "--set", "train.patience=abc"]) == 2
    assert capsys.readouterr().err == "error: --set: train.patience: expected int, got 'abc'\n"
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {patience: abc}\n")
    assert main(["init", str(tmp_path / "lab"), "--params", str(bad)]) == 2
    assert capsys.readouterr().err == f"error: {bad}: train.patience: expected int, got 'abc'\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A campaign workspace made with `activeseg init`, and what init printed."""
    root = tmp_path_factory.mktemp("cli") / "lab"
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as env:
        env.delenv("PREFECT_API_URL", raising=False)
        with contextlib.redirect_stdout(out):
            code = main(["init", str(root), *[a for s in TINY for a in ("--set", s)]])
    assert code == 0, out.getvalue()
    enrol(root)
    return root, out.getvalue()


def test_init_points_to_the_prefect_path(lab):
    root, out = lab
    hint = out.splitlines()[-1]
    assert hint.startswith(f"next: cd {root} && activeseg server start && activeseg worker --background")
    assert hint.endswith("activeseg round start") and "step" not in hint


def test_read_only_commands_start_no_server_and_say_none_runs(lab, capsys, monkeypatch):
    root, _ = lab
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    where = ["--workspace", str(root)]
    assert main(["status", *where]) == 0
    out = capsys.readouterr().out
    assert "round 1 not started" in out and "no Prefect server is running for this workspace" in out
    assert all(step in out for step in PREFECT_PATH)
    assert main(["status", "--json", *where]) == 0
    status = json.loads(capsys.readouterr().out)
    assert (status["state"], status["server"], status["flow_run"], status["batch"]) == ("idle", None, None, None)

    assert main(["labels", "pending", "--json", *where]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == [] and "no Prefect server is running" in captured.err
    assert main(["audit", "--json", *where]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)[0]["type"] == "access_changed"  # init's creation of access.yaml
    assert "no Prefect server is running" in captured.err
    assert server.status(root) is None and not (server.prefect_home(root) / "server.pid").exists()


def test_round_start_refuses_while_a_stop_rule_holds_and_starts_no_server(lab, capsys, monkeypatch):
    root, _ = lab
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    params = root / "params.yaml"
    original = params.read_text()
    labeled = Workspace.open(root).label_state().revealed_pixels()  # init's 3 regions of 32 x 32 px (TypiClust's may overlap)
    assert 1024 < labeled <= 3072
    write_params(params, params, [f"campaign.budget_pixels={labeled}"])
    try:
        code = main(["round", "start", "--workspace", str(root)])
    finally:
        params.write_text(original)
    assert code == 2
    assert capsys.readouterr().out == (f"not started: a stop rule holds (label budget: {labeled} pixels labeled, "
                                       f"budget {labeled}); `activeseg round start --force` starts round 1 anyway\n")
    assert server.status(root) is None


def test_labels_for_an_unpublished_round_name_the_prefect_path(lab, capsys, tmp_path):
    root, _ = lab
    code = main(["labels", "submit", str(tmp_path), "--annotator", "ann", "--round", "1", "--workspace", str(root)])
    out = capsys.readouterr().err
    assert code == 2 and "round 1: no label request was published yet" in out
    assert all(step in out for step in PREFECT_PATH) and "step query" not in out


def test_labels_pending_json_lists_each_open_request_with_its_regions(lab, capsys, monkeypatch):
    root, _ = lab
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    ws = Workspace.open(root)
    ws.train(1)
    ws.query(1)
    assert main(["labels", "pending", "--json", "--workspace", str(root)]) == 0
    (item,) = json.loads(capsys.readouterr().out)
    regions = Workspace.open(root).record(1).queried.regions
    assert (item["round"], item["regions"], item["uploaded"]) == (1, len(regions), 0)
    assert item["region_ids"] == [r.id for r in regions]


def test_status_without_a_server_says_the_round_in_progress_is_unknown(lab, capsys, monkeypatch):
    root, _ = lab
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    claim = server.prefect_home(root) / "round.json"
    claim.parent.mkdir(exist_ok=True)
    claim.write_text(json.dumps({"flow_run_id": str(uuid4()), "round": 1, "trigger": "manual", "since": "now"}))
    try:
        assert main(["status", "--json", "--workspace", str(root)]) == 0
        status = json.loads(capsys.readouterr().out)
    finally:
        claim.unlink()
    assert (status["state"], status["round"], status["flow_run"]["state"]) == ("unknown", 1, "unknown")
    assert status["hint"].startswith("the state of round 1's flow run is unknown while no server runs")
    assert not (server.prefect_home(root) / "server.pid").exists()


def test_counts_read_as_english():
    from activeseg.cli.output import count

    assert [count(1, "file"), count(0, "file"), count(2, "batch"), count(1, "batch")] == [
        "1 file", "0 files", "2 batches", "1 batch"]
