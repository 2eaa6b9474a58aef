"""The access file ``access.yaml``: who works in a workspace, in which roles, and the SSH public keys
that sign their decisions. ``activeseg init`` makes it (its runner the first admin) and git tracks it;
it changes only by ``activeseg access add | remove | role``, run by an admin, each change a ledger event
(:data:`CHANGE_EVENT`).

Roles (:data:`ROLES`): an annotator submits, imports and pulls label batches; a reviewer approves,
rejects and revokes them; an admin changes this file. No role implies another: an admin who also
reviews has both roles, so that the person who manages the access file is not, by that alone, one of
the four eyes on the labels (and :meth:`Access.require` never needs a table of what implies what).

Which version of the file verifies an event's signature: the one in force at the event's place in the
ledger (:func:`in_force`). Every ``access_changed`` event names the digest of the file it produced
(:data:`DIGEST_FIELD`, :meth:`Access.digest`); the event at ledger position N is checked against the
version named by the last change before N, fetched from the git history of ``access.yaml`` by that
digest (:func:`versions`). This is the tamper-resistant choice:

- the order of access changes and decisions is fixed by the ledger's hash chain; git supplies only the
  file's content, which must match the digest the chain names: a history rewritten to add a key to an old
  version, or a hand edit, matches no digest and verifies nothing;
- a git commit's time is whatever its committer set (``GIT_COMMITTER_DATE``, a skewed clock), and an
  event's time is only a claim, so "the version committed at or before the event's time" can be chosen;
- nor does "the version in the commit that recorded the event" work: events wait in ``ledger.db`` until
  the next commit (a submitted batch until its approval), so a removal committed together with them
  would judge a signature made before it by the file after it.

So removing a person keeps their earlier signatures valid (the version before the removal holds their
key) and fails their later ones.
"""

from __future__ import annotations

import getpass
import re
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, ConfigDict, ValidationError, field_validator, model_validator

from activeseg.core.config import Settings
from activeseg.core.util import canonical_json, sha256_text
from activeseg.workspace.errors import WorkspaceError
from activeseg.workspace.ledger import Event
from activeseg.workspace.signing import fingerprint, public_key
from activeseg.workspace.vcs import Vcs

ACCESS_FILE = "access.yaml"
CHANGE_EVENT = "access_changed"
"""The ledger event type of a change of the access file (and of its creation by ``init``)."""
DIGEST_FIELD = "access_sha256"
"""The field of a :data:`CHANGE_EVENT`'s data naming the :meth:`Access.digest` of the file it produced."""

Role = Literal["annotator", "reviewer", "admin"]
ROLES: tuple[Role, ...] = typing.get_args(Role)
NAME = re.compile(r"^[\w.@-]+$")
"""A person's name: letters, digits, ``_ . @ -`` (an OS user name fits; it is typed after ``--by``)."""

HEADER = """\
# The activeseg access file: who works in this workspace, in which roles (annotator: submit, import
# and pull label batches; reviewer: approve, reject and revoke them; admin: change this file), and the
# SSH public keys that sign their decisions. Tracked in git. Change it only with
# `activeseg access add | remove | role`: each change is a ledger event naming this file's digest,
# and `activeseg audit verify` checks signatures against the version in force, so a hand edit counts
# for nothing.
"""


class AccessError(WorkspaceError):
    """The access file is wrong, a person is unknown or lacks a role, or a change is refused."""


def check_name(name: str) -> str:
    """``name`` when it is a valid person's name (:data:`NAME`), else a :class:`AccessError`."""
    if not NAME.match(name):
        raise AccessError(f"{name!r} is not a valid name (letters, digits and _ . @ - only)")
    return name


def check_role(role: str) -> Role:
    """``role`` when it is one of :data:`ROLES`, else a :class:`AccessError` listing them."""
    if role not in ROLES:
        raise AccessError(f"unknown role {role!r} (roles: {', '.join(ROLES)})")
    return typing.cast(Role, role)


class Person(Settings):
    """One person: their name, roles (in :data:`ROLES` order, at least one) and OpenSSH public keys."""

    model_config = ConfigDict(frozen=True)

    name: str
    roles: list[Role]
    keys: list[Annotated[str, AfterValidator(public_key)]] = []

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        return check_name(name)

    @field_validator("roles")
    @classmethod
    def _some_roles_once(cls, roles: list[Role]) -> list[Role]:
        if not roles:
            raise ValueError(f"at least one role is needed ({', '.join(ROLES)})")
        if len(set(roles)) != len(roles):
            raise ValueError(f"a role is listed twice: {roles}")
        return sorted(roles, key=ROLES.index)

    @field_validator("keys")
    @classmethod
    def _keys_once(cls, keys: list[str]) -> list[str]:
        prints = [fingerprint(key) for key in keys]
        twice = sorted({p for p in prints if prints.count(p) > 1})
        if twice:
            raise ValueError(f"key {twice[0]} is listed twice")
        return keys

    def has_key(self, key: str) -> bool:
        """Whether ``key`` (any comment) is one of the person's keys."""
        return fingerprint(key) in {fingerprint(k) for k in self.keys}


class Access(Settings):
    """The people of the access file (sorted by name): names unique, every key one person's, one admin
    at least (else nobody could change the file again)."""

    model_config = ConfigDict(frozen=True)

    people: list[Person]

    @field_validator("people")
    @classmethod
    def _by_name(cls, people: list[Person]) -> list[Person]:
        return sorted(people, key=lambda p: p.name)

    @model_validator(mode="after")
    def _consistent(self) -> Access:
        names = [p.name for p in self.people]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"{twice[0]} is listed twice (one entry per person)")
        owners: dict[str, str] = {}
        for person in self.people:
            for key in person.keys:
                other = owners.setdefault(fingerprint(key), person.name)
                if other != person.name:
                    raise ValueError(f"key {fingerprint(key)} is both {other}'s and {person.name}'s (a key signs "
                                     "for one person)")
        if not any("admin" in p.roles for p in self.people):
            raise ValueError("nobody would have the admin role (at least one admin changes the access file)")
        return self

    def names(self) -> list[str]:
        return [p.name for p in self.people]

    def person(self, name: str) -> Person:
        """The person called ``name``, else an :class:`AccessError` listing the known names."""
        for person in self.people:
            if person.name == name:
                return person
        raise AccessError(f"unknown person {name!r} (the access file knows: {', '.join(self.names())}; "
                          "an admin adds people with activeseg access add)")

    def require(self, name: str, role: Role, action: str = "do this") -> Person:
        """The person called ``name`` when they have ``role``; else an :class:`AccessError` saying that
        ``action`` (e.g. ``"approve a batch"``) needs that role and which roles they have."""
        person = self.person(name)
        if role not in person.roles:
            raise AccessError(f"{name} may not {action}: that needs the {role} role, and {name} has "
                              f"{', '.join(person.roles)}")
        return person

    def keys_of(self, name: str) -> list[str]:
        """The public keys of the person called ``name`` (an unknown name: :meth:`person`'s error)."""
        return list(self.person(name).keys)

    def owner_of(self, key: str) -> str | None:
        """Who owns the public key ``key`` (any comment), or None."""
        return next((p.name for p in self.people if p.has_key(key)), None)

    def digest(self) -> str:
        """SHA-256 of the canonical JSON of the content (comments and layout of the file do not count):
        what a :data:`CHANGE_EVENT` records in :data:`DIGEST_FIELD`."""
        return sha256_text(canonical_json(self.model_dump()))


def _validated(data: object, where: str) -> Access:
    """The access file of ``data`` (as read from YAML), or an :class:`AccessError` starting with
    ``where`` and naming the key of the first problem (``people.1.keys.0: ...``)."""
    try:
        return Access.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"])
        if error["type"] == "value_error":
            problem = str(error["ctx"]["error"])
        elif error["type"] == "missing":
            problem = "missing"
        else:
            problem = f"{error['msg']} (got {error['input']!r})"
        raise AccessError(f"{where}: {key}: {problem}" if key else f"{where}: {problem}") from None


def _built(people: Iterable[Person], where: str) -> Access:
    """The access file of ``people``, or an :class:`AccessError` starting with ``where``."""
    return _validated({"people": [p.model_dump() for p in people]}, where)


def create(admin: str, key: str | None = None) -> Access:
    """The access file of a new workspace: ``admin`` its only person, an admin, with ``key`` if given."""
    check_name(admin)
    return Access(people=[Person(name=admin, roles=["admin"], keys=[public_key(key)] if key else [])])


def add(access: Access, name: str, role: str, key: str | None = None) -> Access:
    """``access`` with ``name`` added as a ``role``, with ``key``; for a person already there, the role
    and key are added to theirs (a second key: a new computer). Refused when nothing would change, or
    when the key is someone else's."""
    check_name(name)
    role = check_role(role)
    key = public_key(key) if key is not None else None
    what = f"the {role} role" + (f" and key {fingerprint(key)}" if key else "")
    if name not in access.names():
        return _built([*access.people, Person(name=name, roles=[role], keys=[key] if key else [])],
                      f"cannot add {name} with {what}")
    old = access.person(name)
    roles = old.roles if role in old.roles else [*old.roles, role]
    keys = old.keys if key is None or old.has_key(key) else [*old.keys, key]
    if (roles, keys) == (old.roles, old.keys):
        raise AccessError(f"{name} has {what} already: nothing to change")
    return _replaced(access, Person(name=name, roles=roles, keys=keys), f"cannot give {name} {what}")


def remove(access: Access, name: str) -> Access:
    """``access`` without ``name`` (refused for the last admin). Their earlier signatures stay valid:
    they are checked against the version in force when they were made (:func:`in_force`)."""
    access.person(name)
    return _built([p for p in access.people if p.name != name], f"cannot remove {name}")


def set_role(access: Access, name: str, roles: Sequence[str]) -> Access:
    """``access`` with the roles of ``name`` replaced by ``roles`` (refused when that changes nothing,
    names no role, or leaves no admin)."""
    old = access.person(name)
    checked = sorted({check_role(r) for r in roles}, key=ROLES.index)
    if not checked:
        raise AccessError(f"{name} needs at least one role (to take them all, activeseg access remove {name})")
    if checked == old.roles:
        raise AccessError(f"{name} has the roles {', '.join(checked)} already: nothing to change")
    return _replaced(access, Person(name=name, roles=checked, keys=old.keys),
                     f"cannot give {name} the roles {', '.join(checked)}")


def _replaced(access: Access, person: Person, where: str) -> Access:
    """``access`` with ``person`` in place of the person of that name (re-validated as a whole)."""
    return _built([person if p.name == person.name else p for p in access.people], where)


def dump(access: Access) -> str:
    """The text of ``access.yaml``: :data:`HEADER`, then the people (one key a line, never wrapped)."""
    body = yaml.safe_dump(access.model_dump(), sort_keys=False, default_flow_style=False, allow_unicode=True,
                          width=1 << 20)
    return HEADER + body


def parse(text: str, where: str) -> Access:
    """The access file of ``text``; errors start with ``where`` (the file, or ``COMMIT:access.yaml``)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise AccessError(f"{where}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise AccessError(f"{where}: expected a mapping with the key 'people'")
    return _validated(data, where)


def load(root: str | Path) -> Access:
    """The access file of the workspace ``root``."""
    path = Path(root) / ACCESS_FILE
    if not path.is_file():
        raise AccessError(f"{path}: no access file (activeseg init makes one)")
    return parse(path.read_text(encoding="utf-8"), str(path))


def save(root: str | Path, access: Access) -> Path:
    """Write ``access.yaml`` into ``root`` atomically (:func:`dump`); returns its path."""
    path = Path(root) / ACCESS_FILE
    part = path.with_name(path.name + ".part")
    part.write_text(dump(access), encoding="utf-8")
    part.replace(path)
    return path


def read_at(root: str | Path, commit: str) -> Access:
    """The access file as the git commit ``commit`` (any revision) of the repository ``root`` holds it."""
    try:
        text = Vcs(Path(root)).git("show", f"{commit}:{ACCESS_FILE}")
    except WorkspaceError as exc:
        raise AccessError(f"{commit}: no {ACCESS_FILE} there ({str(exc).strip().splitlines()[-1]})") from None
    return parse(text, f"{commit}:{ACCESS_FILE}")


def versions(root: str | Path) -> dict[str, Access]:
    """Every version of ``access.yaml`` that a commit of the repository ``root`` holds (any branch or
    tag), and the one in the working tree, by :meth:`Access.digest`. A version that does not parse is
    left out: no change event can name its digest."""
    vcs = Vcs(Path(root))
    found: dict[str, Access] = {}
    for commit in vcs.git("rev-list", "--all", "--", ACCESS_FILE).split():
        try:
            access = read_at(root, commit)
        except AccessError:  # the commit deleted the file, or holds a broken one
            continue
        found.setdefault(access.digest(), access)
    try:
        current = load(root)
    except AccessError:
        return found
    found.setdefault(current.digest(), current)
    return found


def in_force(events: Iterable[Event], seq: int, known: Mapping[str, Access]) -> Access | None:
    """The access file in force for the ledger event ``seq``: the version (from ``known``, by
    :func:`versions`) named by the last :data:`CHANGE_EVENT` before it; None when none came before (a
    workspace older than access files, or the first change itself). A change event naming a version that
    no commit holds is an :class:`AccessError`: the history was rewritten."""
    last = None
    for event in events:
        if event.seq >= seq:
            break
        if event.type == CHANGE_EVENT:
            last = event
    if last is None:
        return None
    digest = last.data.get(DIGEST_FIELD)
    if digest not in known:
        raise AccessError(f"event {last.seq} ({CHANGE_EVENT}) names {ACCESS_FILE} version {str(digest)[:12]}, "
                          "which no commit holds (its history was rewritten, or the change was not committed)")
    return known[digest]


def os_user() -> str:
    """The OS user name: who a command records by default (``--by``)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        raise AccessError("cannot tell the OS user name (no USER, LOGNAME or password entry): "
                          "name the person with --by NAME") from None
