"""git and DVC for a workspace: the subprocesses, their environment, commits and round tags, and where
the remote is (:class:`Remote`). ``dvc push``, ``pull`` and ``fetch`` talk to the remote: they are retried
by the store's :class:`~activeseg.workspace.storage.Retry` policy. What a round does with DVC locally
(track label files, record stages in dvc.lock) goes through DVC's Python API in this process instead
of its command line: no interpreter started, about a second less per call."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import yaml

from activeseg.core.util import round_name
from activeseg.workspace.errors import WorkspaceError
from activeseg.workspace.storage import ObjectStore, Retry, open_store, s3_credentials, split_s3_url

REMOTE_COMMANDS = ("push", "pull", "fetch")
"""The ``dvc`` commands that reach the remote, and so may fail for a while when it does not answer."""

STALE_LOCK = re.compile(r"Unable to create '([^']+\.lock)': File exists")
"""How git says that a lock file is in its way (its path is the group)."""
GIT = ["git", "-c", "user.name=activeseg", "-c", "user.email=activeseg@localhost", "-c", "commit.gpgsign=false",
       "-c", "tag.gpgsign=false", "-c", "core.hooksPath=/dev/null"]


def dvc_executable() -> str:
    """The ``dvc`` next to this Python (the project's virtual environment), else the one on PATH."""
    local = Path(sys.executable).parent / "dvc"
    return str(local) if local.exists() else (shutil.which("dvc") or "dvc")


def subprocess_env() -> dict[str, str]:
    """This process's environment for ``dvc`` and ``git``: telemetry off, the venv's bin first on PATH
    (``dvc repro`` runs ``activeseg``), S3 credentials under the names DVC reads, and one attempt per S3
    request unless ``AWS_MAX_ATTEMPTS`` says otherwise (the store's retry policy retries the command)."""
    env = dict(os.environ, DVC_NO_ANALYTICS="1", GIT_TERMINAL_PROMPT="0")
    env.setdefault("AWS_MAX_ATTEMPTS", "1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    access, secret = s3_credentials()
    if access and not (env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY")):
        env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = access, secret
    return env


@dataclasses.dataclass
class Remote:
    """Where the exchange and DVC's storage live: ``url`` is a folder (relative to the workspace) or
    ``s3://bucket/prefix``."""

    url: str
    endpoint: str | None = None
    region: str | None = None

    @staticmethod
    def choose(root: Path, remote: str | None, endpoint: str | None) -> "Remote":
        """The remote for a new workspace at ``root``: ``s3://...`` (region from the environment), a
        folder, or by default ``<root>-remote`` beside it."""
        if remote and remote.startswith("s3://"):
            split_s3_url(remote)
            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
            return Remote(remote.rstrip("/"), endpoint, region)
        if endpoint:
            raise WorkspaceError("--endpoint is only for an s3:// remote")
        folder = Path(remote).resolve() if remote else root.parent / f"{root.name}-remote"
        return Remote(os.path.relpath(folder, root))

    @property
    def is_s3(self) -> bool:
        return self.url.startswith("s3://")

    def store(self, root: Path, retry: Retry = Retry()) -> ObjectStore:
        return open_store(self.url if self.is_s3 else (root / self.url).resolve(), self.endpoint, self.region, retry)

    def dvc_url(self) -> str:
        """DVC's storage: ``<remote>/dvc`` (``dvc remote add`` stores a folder relative to ``.dvc/``)."""
        return self.url.rstrip("/") + "/dvc" if self.is_s3 else os.path.join(self.url, "dvc")


class Vcs:
    """git and ``dvc`` run in the workspace ``root``. ``in_dvc``: the steps run under ``dvc repro``,
    which records the stages itself. ``remote``: DVC's storage, named when it does not answer through
    every attempt of ``retry``."""

    def __init__(self, root: Path, in_dvc: bool = False, retry: Retry = Retry(), remote: str = "the DVC remote"):
        self.root, self.in_dvc, self.retry, self.remote = root, in_dvc, retry, remote

    def run(self, args: list[str]) -> str:
        """Run a command in the workspace; its stdout, or :class:`WorkspaceError` with its output."""
        done = subprocess.run(args, cwd=self.root, env=subprocess_env(), capture_output=True, text=True)
        if done.returncode != 0:
            name = Path(args[0]).name if args[0] != "git" else "git"
            shown = [a for a in args[1:] if not a.startswith("-c") and "=" not in a][:6]
            output = (done.stderr or done.stdout)[-2000:]
            raise WorkspaceError(f"{name} {' '.join(shown)} failed in {self.root}:\n{output}")
        return done.stdout

    def dvc(self, *args: str) -> str:
        """Run the ``dvc`` command line in the workspace (credentials through the environment only); a
        failed push, pull or fetch is tried again under the retry policy, then raises
        :class:`~activeseg.workspace.storage.StoreUnavailable` (every such failure counts as transient:
        DVC's output does not tell a network failure from others reliably, and retrying costs seconds)."""
        if not args or args[0] not in REMOTE_COMMANDS:
            return self.run([dvc_executable(), *args])
        command = [dvc_executable(), *(a for a in args if a != "-q")]  # -q would hide why it failed
        return self.retry.call(lambda: self.run(command), self.remote, f"running dvc {args[0]}",
                               lambda exc: isinstance(exc, WorkspaceError))

    def git(self, *args: str) -> str:
        """Run git in the workspace with the fixed activeseg identity. A lock file that a killed git left
        behind (a SIGKILL inside a step's commit or tag) is removed and the command run once more, when no
        git process runs in the workspace: a step run again after a kill finishes."""
        try:
            return self.run([*GIT, *args])
        except WorkspaceError as exc:
            lock = self._stale_lock(str(exc))
            if lock is None:
                raise
            lock.unlink(missing_ok=True)
            return self.run([*GIT, *args])

    def _stale_lock(self, message: str) -> Path | None:
        """The lock file git refused to create in ``message``, when it is inside this repository's .git and
        no git process runs in the workspace (then nothing holds it); else None."""
        found = STALE_LOCK.search(message)
        git_dir = (self.root / ".git").resolve()
        if found is None or not Path(found.group(1)).resolve().is_relative_to(git_dir):
            return None
        for process in psutil.process_iter(["name", "cwd"]):
            cwd = process.info["cwd"]
            if process.info["name"] == "git" and cwd and Path(cwd).resolve().is_relative_to(self.root.resolve()):
                return None
        return Path(found.group(1))

    def commit(self, message: str) -> str:
        """Commit everything that changed (if anything did); returns HEAD."""
        self.git("add", "-A")
        if self.git("status", "--porcelain").strip():
            self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD").strip()

    def tag_exists(self, round_number: int) -> bool:
        return bool(self.git("tag", "-l", round_name(round_number)).strip())

    def tag_commit(self, round_number: int) -> str:
        return self.git("rev-list", "-n", "1", round_name(round_number)).strip()

    def tag(self, round_number: int, message: str) -> None:
        """Tag HEAD ``round-NNN`` unless the round is tagged already."""
        if not self.tag_exists(round_number):
            self.git("tag", "-a", round_name(round_number), "-m", message)

    def stages(self) -> list[str]:
        """The stages of the workspace's dvc.yaml (one made by an older version lacks the newer stages)."""
        return list((yaml.safe_load((self.root / "dvc.yaml").read_text()) or {}).get("stages", {}))

    def stage_done(self, *stages: str) -> None:
        """Record the stages' current deps and outs in dvc.lock (``dvc repro`` does it itself), as
        ``dvc commit -f STAGE...``."""
        if not self.in_dvc:
            pipeline = self.root / "dvc.yaml"  # targets name the file: DVC resolves them from the current directory
            self._in_process("commit", lambda repo: [repo.commit(f"{pipeline}:{stage}", force=True) for stage in stages])

    def track(self, *paths: str) -> None:
        """Put files or folders under DVC (cache and ``PATH.dvc``), as ``dvc add PATH...``."""
        self._in_process("add", lambda repo: repo.add([str(self.root / path) for path in paths]))

    def _in_process(self, command: str, action: Callable[[Any], object]) -> None:
        """`action` on the workspace's DVC repository, through DVC's Python API; :class:`WorkspaceError`
        naming the command when DVC refuses. Local only: nothing here reaches the remote."""
        from dvc.exceptions import DvcException
        from dvc.repo import Repo

        logging.getLogger("dvc").setLevel(logging.WARNING)  # as `dvc -q`: no "Updating lock file" in the log
        try:
            with Repo(str(self.root)) as repo:
                repo.scm_context.quiet = True  # nor the "To track the changes with git" hint
                action(repo)
        except DvcException as exc:
            raise WorkspaceError(f"dvc {command} failed in {self.root}:\n{exc}") from exc
