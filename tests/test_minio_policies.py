"""infra/minio/: the object store's least-privilege policies, enforced.

The policies that infra/minio/policies.sh renders are attached to IAM users of moto's S3 server with IAM
enforcement on. The users then go through the project's own S3 code path: S3Store on the MinIO SDK, with
no region, so the SDK asks for the bucket's location as it does in the lab. The exchange's functions
(stage_batch, clear_upload, changed_files, ...) do the same. Each check is a real request that is
allowed or denied. moto ignores policy conditions for S3 requests, so the annotator's listing policy (an
s3:prefix condition) is checked for shape only and never attached here. See infra/README.md, "Least
privilege in the object store".
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from activeseg.core.util import round_name
from activeseg.workspace.exchange.batches import (batch_sha256, changed_files, clear_staged, clear_upload,
                                                  read_staged_batch, read_store_batch, stage_batch)
from activeseg.workspace.exchange.layout import MANIFEST, STAGED_BATCH, round_prefix, staged_prefix
from activeseg.workspace.storage import Retry, S3Store, StoreError
from tests.workspace.s3 import MotoServer

MINIO = Path(__file__).resolve().parents[1] / "infra" / "minio"
SCRIPT = MINIO / "policies.sh"
ROLES = ("annotator-round", "annotator-round-list", "reviewer", "pipeline")
BUCKET, CAMPAIGN, OTHER = "activeseg-test", "lab", "other-lab"  # two campaigns in one bucket
STORE = f"s3://{BUCKET}/{CAMPAIGN}"
MLFLOW_BUCKET = "mlflow-test"
REGION = "us-east-1"
MAX = 1 << 20
DENIED = r"AccessDenied|Access Denied"


def render(role: str, store: str = STORE, round_number: int | None = None) -> dict:
    """A policy document as ``policies.sh render`` prints it."""
    args = ["bash", str(SCRIPT), "render", role, store] + ([str(round_number)] if round_number else [])
    return json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)


def resources(policy: dict, sid: str) -> list[str]:
    return next(s["Resource"] for s in policy["Statement"] if s["Sid"] == sid)


@dataclass
class Lab:
    """A moto server enforcing IAM: an admin (MinIO's root), the reviewers' and annotators' groups and the
    pipeline's user, each with one access key, and the campaign's bucket."""

    endpoint: str
    keys: dict[str, tuple[str, str]]
    rounds: dict[int, str] = field(default_factory=dict)  # open round -> the ARN of its annotator policy

    def store(self, who: str, prefix: str = CAMPAIGN) -> S3Store:
        """The project's store (MinIO SDK, no region: it asks for the bucket's location) under ``who``'s key."""
        access, secret = self.keys[who]
        return S3Store(BUCKET, prefix, self.endpoint, None, access, secret, retry=Retry(0, 0.0))

    def iam(self):
        import boto3

        access, secret = self.keys["admin"]
        return boto3.client("iam", endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id=access,
                            aws_secret_access_key=secret)

    def open_round(self, n: int) -> None:
        """What ``policies.sh open-round`` does on MinIO: the round's annotator policy, attached to the group
        (its listing policy is left out: moto would grant it unconditionally)."""
        iam = self.iam()
        document = json.dumps(render("annotator-round", round_number=n))
        arn = iam.create_policy(PolicyName=f"annotator-{round_name(n)}", PolicyDocument=document)["Policy"]["Arn"]
        iam.attach_group_policy(GroupName="annotators", PolicyArn=arn)
        self.rounds[n] = arn

    def close_round(self, n: int) -> None:
        iam, arn = self.iam(), self.rounds.pop(n)
        iam.detach_group_policy(GroupName="annotators", PolicyArn=arn)
        iam.delete_policy(PolicyArn=arn)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    """The server, set up while moto still lets every request through, then switched to enforcing IAM
    (``/moto-api/reset-auth``: moto's INITIAL_NO_AUTH_ACTION_COUNT, process-wide). Afterwards the previous
    count comes back, every user and bucket goes, and so do the environment changes (no region)."""
    import boto3
    from botocore.exceptions import ClientError

    with pytest.MonkeyPatch.context() as env:
        for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):  # as the lab's worker: the SDK asks the bucket
            env.delenv(name, raising=False)
        server = MotoServer()
        endpoint = server.start()
        previous = None
        try:
            requests.post(f"{endpoint}/moto-api/reset", timeout=10)
            setup = dict(endpoint_url=endpoint, region_name=REGION, aws_access_key_id="setup",
                         aws_secret_access_key="setup")
            iam, s3 = boto3.client("iam", **setup), boto3.client("s3", **setup)
            for bucket in (BUCKET, MLFLOW_BUCKET):
                s3.create_bucket(Bucket=bucket)

            def policy(name: str, document: dict) -> str:
                return iam.create_policy(PolicyName=name, PolicyDocument=json.dumps(document))["Policy"]["Arn"]

            keys = {}
            for user in ("admin", "reviewer", "annotator", "pipeline"):
                iam.create_user(UserName=user)
                key = iam.create_access_key(UserName=user)["AccessKey"]
                keys[user] = (key["AccessKeyId"], key["SecretAccessKey"])
            iam.put_user_policy(UserName="admin", PolicyName="everything", PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
            for group, user in (("reviewers", "reviewer"), ("annotators", "annotator")):
                iam.create_group(GroupName=group)
                iam.add_user_to_group(GroupName=group, UserName=user)
            iam.attach_group_policy(GroupName="reviewers", PolicyArn=policy("reviewer", render("reviewer")))
            iam.attach_user_policy(UserName="pipeline", PolicyArn=policy("pipeline", render("pipeline")))
            # moto's policy validator accepts the listing template too (it is not attached: see the module)
            policy("annotator-list-syntax", render("annotator-round-list", round_number=1))
            answer = requests.post(f"{endpoint}/moto-api/reset-auth", data=b"0", timeout=10)
            previous = answer.json()["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"]
            lab = Lab(endpoint, keys)
            with pytest.raises(ClientError, match="InvalidAccessKeyId"):
                s3.list_objects_v2(Bucket=BUCKET)  # enforcing now: an unknown key is refused
            yield lab
        finally:
            if previous is not None:
                requests.post(f"{endpoint}/moto-api/reset-auth", data=previous.encode(), timeout=10)
            requests.post(f"{endpoint}/moto-api/reset", timeout=10)
            server.stop()


def s3_client(lab: Lab, who: str):
    """boto3 under ``who``'s key: another S3 client, for what the MinIO SDK will not send."""
    import boto3

    access, secret = lab.keys[who]
    return boto3.client("s3", endpoint_url=lab.endpoint, region_name=REGION, aws_access_key_id=access,
                        aws_secret_access_key=secret)


def denied(action: Callable[[], object]) -> None:
    """``action`` is refused by the store (an AccessDenied answer, not a missing object): through S3Store
    (StoreError) or the MinIO SDK's client itself (S3Error)."""
    from minio.error import S3Error

    with pytest.raises((StoreError, S3Error), match=DENIED):
        action()


def seed(lab: Lab, n: int) -> dict[str, bytes]:
    """What a campaign's store holds around round ``n`` (written by the pipeline): its request and an
    export, another round's request, upload, staged batch and quarantine, DVC's files, the report, and the
    other campaign's request of the same round. Returns key -> bytes (keys relative to the campaign)."""
    other = n - 1
    objects = {
        round_prefix("requests", n) + MANIFEST: json.dumps({"round": n}).encode(),
        round_prefix("requests", n) + "r1.png": b"crop of r1",
        round_prefix("requests", n) + "qupath/r1.geojson": b"{}",
        round_prefix("requests", other) + MANIFEST: json.dumps({"round": other}).encode(),
        round_prefix("labels", other) + "r9.png": b"another round's upload",
        staged_prefix(other, "e" * 64) + "files/r9.png": b"another round's staged mask",
        round_prefix("quarantine", other) + "20250101T000000.000000Z/report.json": b"{}",
        f"dvc/files/md5/ab/{n:030d}": b"approved labels",
        "reports/report.html": b"<html/>",
    }
    pipeline = lab.store("pipeline")
    for key, data in objects.items():
        pipeline.put_bytes(key, data)
    lab.store("admin", OTHER).put_bytes(round_prefix("requests", n) + MANIFEST, b"{}")
    return objects


def test_the_templates_name_the_exchange_layout() -> None:
    """Every role renders to a complete policy; the annotator's resources are the round's request and
    upload folders as activeseg.workspace.exchange.layout names them, under the campaign's prefix."""
    for store, prefix in ((STORE, "lab/"), (f"s3://{BUCKET}/a/b/", "a/b/"), (f"s3://{BUCKET}", "")):
        for role in ROLES:
            text = json.dumps(render(role, store, 7))
            assert "{{" not in text and "//" not in text.replace("s3://", "")
        annotator = render("annotator-round", store, 7)
        assert resources(annotator, "ReadTheRoundsRequest") == [
            f"arn:aws:s3:::{BUCKET}/{prefix}{round_prefix('requests', 7)}*"]
        assert resources(annotator, "WriteTheRoundsUploadFolder") == [
            f"arn:aws:s3:::{BUCKET}/{prefix}{round_prefix('labels', 7)}*"]
        listing = render("annotator-round-list", store, 7)["Statement"]
        folders = [prefix + round_prefix(area, 7) for area in ("requests", "labels")]
        assert listing == [{"Sid": "ListTheRoundsRequestAndUploadFolder", "Effect": "Allow",
                            "Action": ["s3:ListBucket"], "Resource": [f"arn:aws:s3:::{BUCKET}"],
                            "Condition": {"StringLike": {"s3:prefix": [p for f in folders
                                                                       for p in (f.rstrip("/"), f + "*")]}}}]
        for role in ("reviewer", "pipeline"):
            assert resources(render(role, store), "ReadTheCampaign" if role == "reviewer"
                             else "ReadAndWriteTheCampaign") == [f"arn:aws:s3:::{BUCKET}/{prefix}*"]
    assert "round-1200" in json.dumps(render("annotator-round", STORE, 1200))  # round_name past 999
    for args in (["annotator-round", STORE], ["annotator-round", STORE, "0"], ["reviewer", "s3://b/../x"],
                 ["nobody", STORE]):
        assert subprocess.run(["bash", str(SCRIPT), "render", *args], capture_output=True).returncode == 2


def test_a_round_goes_through_the_exchange_each_role_with_its_own_key(lab: Lab) -> None:
    """Publish (pipeline), upload (annotator), stage and clear the upload (pipeline), review (reviewer),
    approve (pipeline), each with its own key; the annotator cannot touch the staged batch."""
    n = 2
    lab.open_round(n)
    pipeline, annotator, reviewer = lab.store("pipeline"), lab.store("annotator"), lab.store("reviewer")
    pipeline.ensure()  # the bucket exists: HEAD (s3:HeadBucket in moto, s3:ListBucket in MinIO), no create
    request, upload = round_prefix("requests", n), round_prefix("labels", n)
    pipeline.put_bytes(request + "r1.png", b"crop")
    pipeline.put_bytes(request + MANIFEST, b'{"round": 2}')

    assert annotator.get_bytes(request + MANIFEST) == b'{"round": 2}'
    assert annotator.get_bytes(request + "r1.png") == b"crop"
    annotator.put_bytes(upload + "r1.png", b"mask one")
    annotator.put_bytes(upload + "r1.png", b"mask 1")  # the annotator may replace an upload not taken in yet

    entries = read_store_batch(pipeline, n, MAX)
    digest = batch_sha256(entries)
    staged = stage_batch(pipeline, n, entries, digest, {"annotator": "annotator"})
    assert clear_upload(pipeline, n, entries) == [] and pipeline.list(upload) == []

    for key in (staged + "files/r1.png", staged + STAGED_BATCH, staged + "files/r2.png"):
        denied(lambda: annotator.put_bytes(key, b"not what was staged"))
    denied(lambda: annotator.delete(staged + "files/r1.png"))
    # a name that looks like a way out of the upload folder is a literal key inside it (MinIO refuses the name)
    s3 = s3_client(lab, "annotator")
    sneaky = f"{CAMPAIGN}/{upload}../../{staged}files/r1.png"
    s3.put_object(Bucket=BUCKET, Key=sneaky, Body=b"not what was staged")
    assert [i.key for i in pipeline.list(upload)] == [f"{upload}../../{staged}files/r1.png"]
    assert changed_files(pipeline, n, digest, read_staged_batch(pipeline, n, digest, MAX)) == []

    found = read_staged_batch(reviewer, n, digest, MAX)
    assert [(e.name, e.data) for e in found] == [("r1.png", b"mask 1")]
    assert changed_files(reviewer, n, digest, found) == [] and batch_sha256(found) == digest
    denied(lambda: reviewer.put_bytes(staged + "files/r1.png", b"x"))
    denied(lambda: reviewer.delete(staged + "files/r1.png"))

    pipeline.delete(f"{upload}../../{staged}files/r1.png")
    clear_staged(pipeline, n, digest)  # approved: the batch went into the workspace
    assert pipeline.list(round_prefix("staged", n)) == [] and pipeline.list(upload) == []
    lab.close_round(n)


def test_an_annotator_reads_its_rounds_request_and_writes_its_upload_folder_only(lab: Lab) -> None:
    n = 4
    objects = seed(lab, n)
    lab.open_round(n)
    annotator = lab.store("annotator")
    request, upload, other = round_prefix("requests", n), round_prefix("labels", n), n - 1

    for key in (request + MANIFEST, request + "r1.png", request + "qupath/r1.geojson"):
        assert annotator.get_bytes(key) == objects[key]
    annotator.put_bytes(upload + "r1.png", b"mask")
    annotator.put_bytes(upload + "sub/r2.png", b"mask")  # anything in the folder: the batch checks judge it

    for key in (round_prefix("labels", other) + "r9.png",  # another round's labels
                upload + "r1.png",  # its own upload: write-only
                round_prefix("requests", other) + MANIFEST,  # another round's request
                staged_prefix(other, "e" * 64) + "files/r9.png",
                round_prefix("quarantine", other) + "20250101T000000.000000Z/report.json",
                f"dvc/files/md5/ab/{n:030d}", "reports/report.html"):
        denied(lambda: annotator.get_bytes(key))
    denied(lambda: lab.store("annotator", OTHER).get_bytes(request + MANIFEST))  # the other campaign's

    for key in (round_prefix("labels", other) + "r1.png",  # a closed round's upload folder
                round_prefix("labels", n + 1) + "r1.png",  # a round not open yet
                request + MANIFEST,  # its own request
                request + "r1.png",
                staged_prefix(n, "f" * 64) + "files/r1.png",  # staging a batch of its own
                round_prefix("quarantine", n) + "x/report.json",
                f"dvc/files/md5/ab/{n:030d}", "reports/report.html",
                "r1.png", "labels/r1.png"):  # the campaign's root, the labels area outside a round
        denied(lambda: annotator.put_bytes(key, b"mask"))
    denied(lambda: lab.store("annotator", OTHER).put_bytes(upload + "r1.png", b"mask"))
    denied(lambda: annotator.delete(upload + "r1.png"))  # the pipeline clears the upload folder
    denied(lambda: annotator.list(upload))  # listing needs the listing policy (MinIO only, not attached here)
    denied(lambda: annotator.list(""))
    # what the SDK asks first (the lab's worker and annotators give no region); every call above needed it
    assert s3_client(lab, "annotator").get_bucket_location(Bucket=BUCKET)["LocationConstraint"] is None

    assert read_store_batch(lab.store("pipeline"), n, MAX)[0].data == b"mask"  # the upload did land
    lab.close_round(n)
    denied(lambda: annotator.get_bytes(request + MANIFEST))
    denied(lambda: annotator.put_bytes(upload + "r3.png", b"mask"))


def test_a_reviewer_reads_the_campaign_and_writes_nothing(lab: Lab) -> None:
    n = 6
    objects = seed(lab, n)
    reviewer = lab.store("reviewer")
    for key, data in objects.items():
        assert reviewer.get_bytes(key) == data
        assert reviewer.exists(key)
    assert {i.key for i in reviewer.list("")} >= set(objects)
    for key in objects:
        denied(lambda: reviewer.put_bytes(key, b"x"))
        denied(lambda: reviewer.delete(key))
    denied(lambda: reviewer.put_bytes(round_prefix("labels", n) + "r1.png", b"mask"))
    denied(lambda: lab.store("reviewer", OTHER).get_bytes(round_prefix("requests", n) + MANIFEST))
    denied(lambda: S3Store(MLFLOW_BUCKET, "", lab.endpoint, None, *lab.keys["reviewer"], Retry(0, 0.0))
           .get_bytes("x"))
    assert all(reviewer.get_bytes(key) == data for key, data in objects.items())  # nothing changed


def test_the_pipeline_reads_and_writes_its_campaign_only(lab: Lab) -> None:
    n = 8
    objects = seed(lab, n)
    pipeline = lab.store("pipeline")
    pipeline.ensure()
    for key, data in objects.items():
        assert pipeline.get_bytes(key) == data
        pipeline.put_bytes(key, data + b"!")
        assert pipeline.get_bytes(key) == data + b"!"
    pipeline.delete(round_prefix("labels", n - 1) + "r9.png")
    assert not pipeline.exists(round_prefix("labels", n - 1) + "r9.png")
    other = lab.store("pipeline", OTHER)
    denied(lambda: other.get_bytes(round_prefix("requests", n) + MANIFEST))
    denied(lambda: other.put_bytes(round_prefix("requests", n) + MANIFEST, b"{}"))
    denied(lambda: other.client.remove_object(BUCKET, f"{OTHER}/{round_prefix('requests', n)}{MANIFEST}"))
    mlflow = S3Store(MLFLOW_BUCKET, "", lab.endpoint, None, *lab.keys["pipeline"], Retry(0, 0.0))
    denied(lambda: mlflow.put_bytes("x", b"x"))  # MLflow's artifacts go through the MLflow server
    denied(lambda: pipeline.client.make_bucket("activeseg-new"))  # minio-init makes the buckets
    assert lab.store("admin", OTHER).get_bytes(round_prefix("requests", n) + MANIFEST) == b"{}"


def test_policies_sh_drives_mc(tmp_path: Path) -> None:
    """install, open-round and close-round call ``mc admin policy`` with the rendered documents (a stand-in
    ``mc`` records its arguments and the policy files it is given)."""
    log = tmp_path / "mc.log"
    fake = tmp_path / "bin" / "mc"
    fake.parent.mkdir()
    fake.write_text('#!/usr/bin/env bash\necho "$*" >>"$MC_LOG"\n'
                    'if [ "$3" = create ]; then cat "$6" >>"$MC_LOG"; fi\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}", "MC_LOG": str(log)}

    def run(*args: str) -> list[str]:
        log.write_text("")
        subprocess.run(["bash", str(SCRIPT), *args], check=True, capture_output=True, env=env)
        return log.read_text().splitlines()

    def calls(lines: list[str]) -> list[str]:  # the mc commands, without create's temporary file name
        return [line.rsplit(" ", 1)[0] if line.startswith("admin policy create") else line
                for line in lines if line.startswith("admin policy")]

    lines = run("install", "lab", "s3://activeseg/lab")
    assert calls(lines) == ["admin policy create lab activeseg-lab-reviewer",
                            "admin policy create lab activeseg-lab-pipeline"]
    assert '"arn:aws:s3:::activeseg/lab/*"' in "\n".join(lines)
    lines = run("open-round", "lab", "s3://activeseg/lab", "3", "annotators")
    assert calls(lines) == ["admin policy create lab activeseg-lab-annotator-round-003",
                            "admin policy create lab activeseg-lab-annotator-round-003-list",
                            "admin policy attach lab activeseg-lab-annotator-round-003 "
                            "activeseg-lab-annotator-round-003-list --group annotators"]
    assert '"arn:aws:s3:::activeseg/lab/labels/round-003/*"' in "\n".join(lines)
    assert run("close-round", "lab", "s3://activeseg/lab", "3", "annotators") == [
        "admin policy detach lab activeseg-lab-annotator-round-003 activeseg-lab-annotator-round-003-list "
        "--group annotators",
        "admin policy rm lab activeseg-lab-annotator-round-003",
        "admin policy rm lab activeseg-lab-annotator-round-003-list"]
