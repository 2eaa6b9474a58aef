"""The people the tests name, added to a workspace's access file as its admin (the OS user, who ran
``init``) adds them: through :meth:`Workspace.change_access`, one recorded and committed change."""

from __future__ import annotations

from functools import reduce
from pathlib import Path

from activeseg.workspace import Workspace
from activeseg.workspace.access import Access, add, os_user

ANNOTATORS = ("alice", "bob", "carol", "dan", "eve", "mallory", "ann", "pathologist", "bench", "given", "given-name",
              "x")
REVIEWERS = ("pi", "bob", "carol", "rita", "sam", "x", "bench", "lead")


def enrol(root: str | Path, annotators: tuple[str, ...] = ANNOTATORS, reviewers: tuple[str, ...] = REVIEWERS) -> None:
    """Give ``annotators`` the annotator role and ``reviewers`` the reviewer role in the workspace ``root``."""
    wanted = [(name, "annotator") for name in annotators] + [(name, "reviewer") for name in reviewers]

    def edit(access: Access) -> Access:
        return reduce(lambda done, pair: add(done, *pair), wanted, access)

    Workspace.open(root).change_access(os_user(), "the tests' people", "added the tests' people", edit)
