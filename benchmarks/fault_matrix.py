"""Issue 13's fault matrix: run the fault tests with pytest (one subprocess, a JUnit XML report) and print one
row per fault: the fault, what was checked, pass/fail. Exits non-zero when any row fails (or has no test
that ran). The object-store rows (outages, odd object names, credentials) run against a moto S3 server;
the SIGKILL rows against a workspace with its local remote (each kill test copies one workspace, and a
moto bucket cannot be copied with it). The Prefect rows run real local servers and workers; those of
tests/flows/test_faults.py are marked `matrix` and run only with pytest's --matrix, which this passes. The
lab rows (tests/flows/test_lab_campaigns.py, marked `lab`: --lab, passed too) start make lab's stack, so
they need PostgreSQL's server (`make lab-deps`); the identity rows use ssh-keygen.

    .venv/bin/python benchmarks/fault_matrix.py            # every row (the Prefect rows take minutes)
    .venv/bin/python benchmarks/fault_matrix.py --quick    # without the rows that need Prefect
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KILL = "tests/workspace/test_kill.py::test_sigkill_inside_a_step_then_the_round_completes_as_a_clean_run"
COMPARED = "events once, labels, 1 tag, dvc, verify, status"
FAULTS = "tests/flows/test_faults.py"  # marked `matrix`: runs with --matrix only
CLEAN = "events once, labels, 1 tag/round, linear, clean git, dvc in sync, verify, Completed"
IDENTITY = "tests/workspace/test_identity.py"
LAB = "tests/flows/test_lab_campaigns.py"  # marked `lab`: starts make lab's stack, runs with --lab only

# (fault, what was checked, test selectors: "file" or "file::test" or "file::test[param]", needs Prefect)
ROWS: list[tuple[str, str, list[str], bool]] = [
    *[(f"SIGKILL in {point}", f"rerun vs clean run: {COMPARED}", [f"{KILL}[{point}]"], False)
      for point in ("validate", "partition", "train", "query-scoring", "query-upload", "approve-before-commit",
                    "evaluate-dvc-push", "evaluate-commit-no-tag")],
    ("worker killed mid-training (Prefect)", "retried run repeats no finished step",
     ["tests/flows/test_al_round.py::test_worker_killed_mid_training_the_retried_run_repeats_no_finished_step"], True),
    ("worker killed alone", "its run carries on, the next worker resumes it, no step twice; stop rule refuses round start",
     ["tests/flows/test_worker_recovery.py"], True),
    ("suspended round, worker restarted", "no process held while waiting; resumes on a new worker",
     ["tests/flows/test_al_round.py::test_round_suspends_holds_no_process_and_resumes_on_a_new_worker"], True),
    ("wait expired", "clear message, round waits anew reusing finished steps",
     ["tests/flows/test_al_round.py::test_expired_wait_fails_with_a_clear_message_and_the_round_can_wait_anew"], True),
    ("two round triggers at once", "one round runs, the other skipped and recorded",
     ["tests/flows/test_al_round.py::test_two_triggers_at_once_run_one_round"], True),
    *[(f"worker + flow-run process SIGKILLed in {point} (Prefect)", f"new worker recovers the run: {CLEAN}",
       [f"{FAULTS}::{test}"], True) for point, test in (
        ("query upload", "test_worker_killed_while_the_query_uploads_the_request"),
        ("ingest, labels before commit", "test_worker_killed_while_the_approved_labels_are_taken_in"),
        ("evaluate dvc push", "test_worker_killed_while_the_evaluate_pushes_to_dvc"))],
    ("S3 outage in a round run (moto, Prefect)", "short one in publish absorbed; long one in dvc push fails the "
     "run naming the store; round start finishes, events once", [f"{FAULTS}::test_store_outages_during_a_round_run"],
     True),
    *[(f"Prefect server killed while {when}", "worker restarts it on its port; round completes as a clean one",
       [f"tests/flows/test_server_restart.py::test_server_killed_while_the_round_{test}"], True)
      for when, test in (("the round trains", "trains"), ("suspended", "is_suspended"))],
    ("S3 outage: publish/upload/ingest/push (moto)", "short retried, long fails clearly, nothing half-applied; "
     "round completes, events once", ["tests/workspace/test_outage.py"], False),
    ("two submissions at once", "exactly one staged, the other refused naming it; replace recorded",
     ["tests/workspace/exchange/test_intake.py::test_two_submissions_at_once_stage_exactly_one",
      "tests/workspace/exchange/test_intake.py::test_replacing_a_staged_batch_is_recorded_and_a_rejected_batch_may_come_again"],
     False),
    ("staged batch changed in the store, then approved", "refused on the record (approver, batch, reason), batch "
     "quarantined with the reason, approve exits 1 saying why, status and labels pending show it; by hand and "
     "through the suspended round run",
     ["tests/workspace/exchange/test_intake.py::test_an_approval_of_a_changed_staged_batch_is_refused_recorded_and_shown",
      "tests/flows/test_al_round.py::test_round_suspends_holds_no_process_and_resumes_on_a_new_worker"], True),
    ("second annotator uploads over a staged batch", "staged batch unchanged, partial upload quarantined alone, "
     "a replacement unstages it on the record with a copy kept; every byte handed in can be found",
     ["tests/workspace/exchange/test_intake.py::test_an_upload_over_a_staged_batch_never_changes_or_loses_it"], False),
    ("two approvals at once", "the batch taken in once",
     ["tests/workspace/exchange/test_intake.py::test_two_approvals_at_once_take_the_batch_in_once"], False),
    ("reviewer rejects, annotator resubmits", "approval gates labels; events with actors",
     ["tests/workspace/exchange/test_intake.py::test_a_batch_is_staged_rejected_resubmitted_and_taken_in_only_when_approved"],
     False),
    ("decompression-bomb PNG", "refused from the header, not decoded",
     ["tests/workspace/test_bad_input.py::test_a_decompression_bomb_in_a_batch_is_quarantined_without_decoding"], False),
    ("palette / 16-bit masks", "read by value or refused clearly",
     ["tests/workspace/test_bad_input.py::test_palette_and_16_bit_masks_are_taken_in_by_their_values",
      "tests/workspace/test_bad_input.py::test_a_16_bit_mask_with_values_outside_the_classes_is_refused"], False),
    ("odd object names in the bucket (moto)", "quarantined with reasons, not silently removed",
     ["tests/workspace/test_bad_input.py::test_odd_object_names_uploaded_to_the_bucket_are_quarantined_with_reasons"],
     False),
    ("params.yaml edited: dataset/split", "refused naming the keys; no training",
     ["tests/workspace/test_bad_input.py::test_params_edited_to_change_the_dataset_or_split_are_refused",
      "tests/workspace/test_bad_input.py::test_a_round_does_not_train_after_the_split_was_edited"], False),
    ("credentials after an S3 campaign (moto)", "no key in logs, MLflow, results, ledger, git, bucket",
     ["tests/workspace/test_credentials.py"], False),
    ("ledger line deleted / non-JSON", "verify fails on its own and against db + git; file:line named",
     ["tests/workspace/test_audit.py", "tests/workspace/test_ledger.py::test_an_export_missing_a_line_fails_on_its_own",
      "tests/workspace/test_ledger.py::test_a_non_json_export_line_is_named_by_file_and_line"], False),
    *[(fault, checked, [f"{IDENTITY}::{test}"], False) for fault, checked, test in (
        ("annotator approves their own batch", "refused (four eyes), recorded",
         "test_an_annotator_approving_their_own_batch_is_refused_and_recorded"),
        ("decision signed with another person's key", "refused at once, recorded",
         "test_a_decision_signed_with_another_persons_key_is_refused_at_once_and_recorded"),
        ("signed approval forged (stranger's key, changed reason, signature removed)", "audit verify fails naming "
         "the event", "test_a_forged_signed_approval_fails_audit_verify_naming_the_event"),
        ("person removed from access.yaml", "earlier signatures verify, later ones fail",
         "test_removing_a_person_keeps_their_earlier_signatures_and_fails_later_ones"))],
    ("Prefect server on 0.0.0.0", "refused without an auth string; with one, a client without it gets 401",
     ["tests/orchestration/test_server_auth.py::test_a_server_off_loopback_without_an_auth_string_is_refused",
      "tests/orchestration/test_server_auth.py::test_a_server_on_all_interfaces_lets_in_only_clients_with_the_string"],
     False),
    ("annotator key beyond its round (moto IAM)", "other rounds' labels unreadable, staged batch not overwritten, "
     "nothing written outside its upload folder", ["tests/test_minio_policies.py"], False),
    *[(fault, checked, [f"{LAB}::{test}"], True) for fault, checked, test in (
        ("two campaigns on one lab stack", "both suspended at once; one approval resumes only its run; status, "
         "model list and S3 prefix per campaign", "test_two_campaigns_run_and_suspend_at_once_and_stay_apart"),
        ("PostgreSQL restarted, round suspended (lab)", "the round resumes after approval and completes",
         "test_a_suspended_round_resumes_after_postgres_restarts"),
        ("MLflow server down during evaluate (lab)", "retried; one evaluate run and one model version per round",
         "test_mlflow_down_during_evaluate_is_retried_and_logs_once"),
        ("Dask worker SIGKILLed mid-query (lab)", "same selection as one process; the cluster back to 2 workers",
         "test_a_stack_dask_worker_killed_mid_query_changes_nothing"))],
]


def node_id(case: ET.Element) -> str:
    """A JUnit test case as a pytest node id: tests.workspace.test_x + name -> tests/workspace/test_x.py::name."""
    return case.get("classname", "").replace(".", "/") + ".py::" + case.get("name", "")


def outcome(case: ET.Element) -> str:
    if case.find("failure") is not None or case.find("error") is not None:
        return "failed"
    return "skipped" if case.find("skipped") is not None else "passed"


def selects(selector: str, node: str) -> bool:
    path, _, test = selector.partition("::")
    file, _, name = node.partition("::")
    if file != path:
        return False
    return not test or name == test or (("[" not in test) and name.startswith(test + "["))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="skip the rows that need Prefect (tests marked prefect)")
    parser.add_argument("--log", type=Path, help="write pytest's output there (its failures are printed anyway)")
    args = parser.parse_args()
    rows = [row for row in ROWS if not (args.quick and row[3])]
    # the Prefect tests of one module share its server and the deployments its first test's worker made: run
    # those modules whole
    targets = sorted({s.partition("::")[0] if s.startswith("tests/flows/") else s for row in rows for s in row[2]})
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        started = time.monotonic()
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "0", "-q", "-rA", "--matrix", "--lab",
                   f"--junitxml={xml}", *targets]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        seconds = time.monotonic() - started
        cases = {node_id(c): (outcome(c), float(c.get("time", 0))) for c in ET.parse(xml).iter("testcase")} \
            if xml.exists() else {}
    if args.log:
        args.log.write_text(done.stdout + done.stderr)
    if not cases:
        sys.stdout.write(done.stdout[-4000:] + done.stderr[-4000:])
    for line in done.stdout.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            print(line[:300])
    table = []
    for fault, checked, selectors, _ in rows:
        hits = {n: r for n, r in cases.items() if any(selects(s, n) for s in selectors)}
        ok = bool(hits) and all(o == "passed" for o, _ in hits.values())
        table.append((fault, checked, f"{'pass' if ok else 'FAIL'} ({len(hits)} tests, "
                                      f"{sum(t for _, t in hits.values()):.0f} s)"))
    widths = [max(len(r[i]) for r in [("fault", "checked", "result"), *table]) for i in range(3)]
    for r in [("fault", "checked", "result"), tuple("-" * w for w in widths), *table]:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    failed = [r[0] for r in table if not r[2].startswith("pass")]
    print(f"{len(table) - len(failed)}/{len(table)} rows pass, pytest {seconds:.0f} s"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
