"""Campaign-workspace commands: ``init``, ``step``, ``labels``, ``access`` and ``audit``.

A command that records a person's decision names them with ``--by NAME`` (``--annotator NAME`` for
``labels submit`` and ``ingest``; default: the OS user name) and may sign it with ``--sign KEY``; see
:mod:`activeseg.workspace.identity`.

Every command but ``init`` runs in the workspace containing the current folder, or in ``--workspace DIR``.
The read-only ones (``labels pending``, ``audit``) never start a Prefect server; they say when none runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from rich.markup import escape

from activeseg.cli.output import console, print_json, print_table, say

if TYPE_CHECKING:
    from activeseg.workspace.records import Staged

STEPS = ("validate", "partition", "pretrain", "train", "query", "evaluate")


def _workspace(args: argparse.Namespace):
    from activeseg.workspace.workspace import Workspace

    root = args.workspace or Workspace.find(Path.cwd())
    return Workspace.open(root, in_dvc=getattr(args, "in_dvc", False))


def note_server(root: Path) -> None:
    """Say (stderr) when no Prefect server runs for the workspace; a read-only command starts none."""
    from activeseg.orchestration import server

    if server.status(root) is None:
        say("no Prefect server is running for this workspace (flow runs are not shown; `activeseg server start`)")


def cmd_init(args: argparse.Namespace) -> int:
    from activeseg.workspace.workspace import Workspace

    ws = Workspace.init(args.dir, args.dataset, classes=args.classes, remote=args.remote, endpoint=args.endpoint,
                        overrides=args.overrides, params=args.params, admin=args.admin, key=args.key, sign=args.sign)
    console.print(f"workspace {ws.root}: {len(ws.dataset.stems)} images, remote {ws.store.url}, tagged round-000")
    console.print(f"access.yaml: {ws.access().names()[0]} is its admin; add people with `activeseg access add NAME "
                  "--role annotator|reviewer|admin --key PUB`", highlight=False, markup=False)
    console.print(f"next: cd {args.dir} && activeseg server start && activeseg worker --background "
                  "&& activeseg round start", highlight=False)
    return 0


def cmd_step(args: argparse.Namespace) -> int:
    ws = _workspace(args)
    if args.step_command == "validate":
        result = ws.validate()
    elif args.step_command == "partition":
        result = {"regions": str(ws.partition().relative_to(ws.root))}
    elif args.step_command == "pretrain":
        result = ws.pretrain() or {"enabled": False}
    else:
        result = getattr(ws, args.step_command)(args.round)
    if args.step_command == "query":
        shown = {k: v for k, v in result.items() if k not in ("regions", "pseudo")}
        result = {**shown, "regions": len(result["regions"])}
    print_json(result)
    if args.step_command == "evaluate" and ws.in_dvc:
        console.print("metrics computed; after the labels, run activeseg step evaluate to close the round")
    return 0


def cmd_labels(args: argparse.Namespace) -> int:
    ws = _workspace(args)
    if args.labels_command == "pending":
        from activeseg.orchestration.status import pending
        from activeseg.workspace.ledger_text import refusal

        items = pending(ws)
        if args.json:
            print_json(items)
        else:
            keys = ("round", "regions", "request", "uploaded", "rejected_batches")
            print_table(("round", "regions", "request", "uploaded files", "rejected batches", "staged batch"),
                        [[*(item[k] for k in keys), _staged(item["staged"])] for item in items],
                        title="open label requests")
            for item in items:
                if item["refused"]:
                    say(f"round {item['round']}: {refusal(item['refused'])}")
        note_server(ws.root)
        return 0
    if args.labels_command == "export":
        from activeseg.workspace.exchange.formats.service import export_round

        prefix = args.image_prefix
        image_url = (lambda item: f"{prefix.rstrip('/')}/{item.id}.png") if prefix else None
        result = export_round(ws, ws.resolve(args.round), args.format, args.out, image_url=image_url)
    elif args.labels_command == "import":
        from activeseg.workspace.exchange.formats.service import import_round

        result = import_round(ws, args.round, args.format, args.path, args.annotator, args.replace,
                              by=ws.person(args.by or args.annotator or os_user(), args.sign))
        clipped = result.clipped or {}
        if clipped:
            say("shapes clipped at a region's edge, per region: "
                + ", ".join(f"{rid} {len(shapes)}" for rid, shapes in clipped.items())
                + " (the labels_submitted event names each: `activeseg audit --json`)")
    elif args.labels_command == "pull":
        from activeseg.workspace.exchange.formats.live import pull

        result = pull(ws, args.round, args.replace, by=ws.person(by(args), args.sign))
        print_json(result)
        say(result["message"])
        return 0
    elif args.labels_command == "revoke":
        regions = args.regions.split(",") if args.regions is not None else None
        result = ws.revoke(args.round, by(args), args.reason, regions, sign=args.sign)
    elif args.labels_command == "submit":
        result = ws.submit(args.round, args.dir, args.annotator or os_user(), args.replace, sign=args.sign)
    elif args.labels_command == "ingest":
        result = ws.ingest(args.round, args.annotator or os_user(), replace=args.replace, sign=args.sign)
    else:
        result = ws.simulate_labels(args.round)
    if args.labels_command == "export":
        console.print(exported_line(result), highlight=False, markup=False)
    elif args.labels_command == "revoke":
        print_json(result)
    else:
        from activeseg.workspace.records import Staged

        console.print(staged_line(Staged.model_validate(result)), highlight=False, markup=False)
    return 0


def os_user() -> str:
    """The OS user name: whom a command records when no name is given."""
    from activeseg.workspace.access import os_user as user

    return user()


def by(args: argparse.Namespace) -> str:
    """The person a command records: ``--by NAME``, else the OS user name."""
    return args.by or os_user()


def add_person_options(parser: argparse.ArgumentParser, who: str = "--by", help: str = "who decides") -> None:
    """``--by NAME`` (or ``who``) and ``--sign KEY``, for a command that records a person's decision."""
    parser.add_argument(who, help=f"{help} (default: the OS user name); a person of access.yaml")
    parser.add_argument("--sign", metavar="KEY",
                        help="sign the decision: a private key file, a public key the SSH agent holds, or 'agent'")


def cmd_access(args: argparse.Namespace) -> int:
    from activeseg.workspace import access

    ws = _workspace(args)
    if args.access_command == "list":
        people = ws.access().people
        if args.json:
            print_json([p.model_dump() for p in people])
        else:
            from activeseg.workspace.signing import fingerprint

            print_table(("name", "roles", "keys"), [(p.name, ", ".join(p.roles),
                                                     ", ".join(fingerprint(k) for k in p.keys) or "-")
                                                    for p in people], title="access.yaml")
        return 0
    name = args.name
    if args.access_command == "add":
        key = _public_key(args.key)
        change = f"added {name} as {args.role}" + (" with a key" if key else "")
        edit = lambda old: access.add(old, name, args.role, key)  # noqa: E731
    elif args.access_command == "remove":
        change, edit = f"removed {name}", lambda old: access.remove(old, name)
    else:
        roles = [r.strip() for r in args.roles.split(",")]
        change, edit = f"gave {name} the roles {', '.join(roles)}", lambda old: access.set_role(old, name, roles)
    new = ws.change_access(by(args), name, change, edit, sign=args.sign)
    held = ", ".join(new.person(name).roles) if name in new.names() else "none: removed"
    console.print(f"access.yaml: {change} (roles of {name}: {held}); recorded and committed", highlight=False,
                  markup=False)
    return 0


def _public_key(text: str | None) -> str | None:
    """``--key``: a public key line or the path of a ``.pub`` file, checked."""
    from activeseg.workspace.signing import read_public_key

    return read_public_key(text) if text else None


def exported_line(export: dict[str, Any]) -> str:
    """An export in words, with the command that hands the tool's export back."""
    n, fmt = export["round"], export["format"]
    return (f"round {n}: {export['regions']} regions exported for {fmt} to {export['out']} ({export['files']} files, "
            f"the model's prediction as pre-annotation; also at {export['store']}); hand the tool's export back with "
            f"`activeseg labels import PATH --format {fmt} --annotator NAME --round {n}`")


def staged_line(batch: Staged) -> str:
    """A staged batch in words, with the commands that approve or reject it."""
    n = batch.round
    replaced = f", replacing batch {batch.replaces[:12]}" if batch.replaces else ""
    return (f"round {n}: batch {batch.batch_sha256[:12]} from {batch.annotator} staged ({batch.files} masks"
            f"{replaced}); approve it with `activeseg approve --round {n} --by NAME` or reject it with "
            f"`activeseg reject --round {n} --by NAME --reason TEXT`")


def _staged(staged: dict[str, Any] | None) -> str:
    """A staged batch in the pending table: its hash and annotator."""
    return f"{staged['batch_sha256']} from {staged['annotator']}" if staged else "-"


def cmd_audit(args: argparse.Namespace) -> int:
    from activeseg.workspace.ledger_text import summary, to_csv

    ws = _workspace(args)
    if args.action == "verify":
        from activeseg.workspace.audit import check_signatures

        result, signatures = ws.verify(), check_signatures(ws)
        if args.json:
            print_json({"ok": result.ok, "message": result.message, "bad_seq": result.bad_seq,
                        "signatures": signatures.to_dict()})
            return 0 if result.ok else 1
        console.print(("[green]ok:[/] " if result.ok else "[bold red]ledger verification failed:[/] ")
                      + escape(result.message), highlight=False)
        console.print(f"signatures: {signatures.signed} signed, {signatures.unsigned} unsigned, "
                      f"{len(signatures.bad)} bad", highlight=False)
        for _, problem in signatures.bad:
            console.print(f"  bad: {problem}", highlight=False, markup=False)
        return 0 if result.ok else 1
    events = ws.ledger.events(round=args.round, sample=args.sample, annotator=args.annotator, since=args.since)
    if args.json:
        print_json([e.to_dict() for e in events])
    elif args.csv:
        sys.stdout.write(to_csv(events))
    else:
        title = f"history of {args.sample}" if args.sample else "audit ledger"
        print_table(("seq", "time (UTC)", "round", "event", "actor", "details"),
                    [(e.seq, e.time[:19], e.round, e.type, e.actor, summary(e, args.sample)) for e in events],
                    title=title)
    note_server(ws.root)
    return 0


def add_commands(sub: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``init``, ``step``, ``labels`` and ``audit`` on the main parser's subcommands."""
    p = sub.add_parser("init", help="create a campaign workspace (git + DVC, dataset imported and pushed)")
    p.add_argument("dir", type=Path)
    p.add_argument("--dataset", default="synthetic",
                   help="dataset folder (images/ + masks/, slides/ + slide_masks/, or both) or 'synthetic'")
    p.add_argument("--classes", type=int, help="classes including background (default: data.classes)")
    p.add_argument("--remote", help="folder (default: DIR-remote beside the workspace) or s3://bucket/prefix")
    p.add_argument("--endpoint", help="S3 endpoint URL for MinIO or any S3 service, e.g. http://127.0.0.1:9000")
    p.add_argument("--admin", help="the first admin of access.yaml (default: the OS user name)")
    p.add_argument("--key", help="the admin's SSH public key: a .pub file or a key line")
    p.add_argument("--sign", metavar="KEY", help="sign the access file's creation (see activeseg access --help)")
    common(p)
    p.set_defaults(func=cmd_init)

    def where(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--workspace", type=Path, help="workspace folder (default: the one containing .)")

    step = sub.add_parser("step", help="run one step of the round in progress").add_subparsers(
        dest="step_command", required=True)
    for name in STEPS:
        p = step.add_parser(name, help=f"the {name} step")
        where(p)
        if name in ("train", "query", "evaluate"):
            p.add_argument("--round", type=int, help="round (default: the round in progress)")
        p.add_argument("--in-dvc", action="store_true", help="run as a dvc.yaml stage (dvc repro records the outputs)")
        p.set_defaults(func=cmd_step)

    labels = sub.add_parser("labels", help="label requests and batches").add_subparsers(
        dest="labels_command", required=True)
    p = labels.add_parser("pending", help="open label requests")
    p.add_argument("--json", action="store_true")
    where(p)
    p = labels.add_parser("submit", help="validate, upload and stage a folder of masks (<region id>.png) for approval")
    p.add_argument("dir", type=Path)
    add_person_options(p, "--annotator", "who made the batch: an annotator")
    p = labels.add_parser("ingest", help="validate and stage the batch uploaded to labels/round-NNN/ in the store")
    add_person_options(p, "--annotator", "who made the batch: an annotator")
    for name in ("submit", "ingest"):
        labels.choices[name].add_argument("--replace", action="store_true",
                                          help="replace a batch that is staged and waits for review (recorded)")
    p = labels.add_parser("simulate", help="answer the request from ground truth as simulated-oracle")
    formats = ("qupath", "cvat", "labelstudio")
    p = labels.add_parser("export", help="write the round's request with the model's prediction for QuPath, CVAT "
                                         "or Label Studio (also into the store: requests/round-NNN/<format>/)")
    p.add_argument("--format", required=True, choices=formats)
    p.add_argument("--out", required=True, type=Path, help="folder to write into")
    p.add_argument("--image-prefix", help="Label Studio: URL prefix of the crops (default: local files, "
                                          "/data/local-files/?d=images/)")
    p = labels.add_parser("import", help="convert a QuPath, CVAT or Label Studio export to masks and submit them")
    p.add_argument("path", type=Path, help="the tool's export: a file or a folder")
    p.add_argument("--format", required=True, choices=formats)
    p.add_argument("--annotator", help="who annotated, when the export names nobody (Label Studio completed_by, "
                                       "CVAT assignee/owner, QuPath metadata annotator are taken first)")
    p.add_argument("--replace", action="store_true", help="replace a batch that is staged and waits for review")
    add_person_options(p, help="who hands the batch in: an annotator")
    p = labels.add_parser("pull", help="oracle.kind labelstudio: fetch the round's annotations from Label Studio; when "
                                       "every task is done, import them (validated, staged for approval)")
    p.add_argument("--replace", action="store_true", help="replace a batch that is staged and waits for review")
    add_person_options(p, help="who hands the batch in: an annotator")
    p = labels.add_parser("revoke", help="revoke an accepted batch (or some of its regions): recorded, left out of "
                                         "training from the next round, the regions asked again")
    p.add_argument("--round", type=int, required=True, help="the round whose accepted batch is revoked")
    add_person_options(p, help="who revokes it: a reviewer")
    p.add_argument("--reason", required=True)
    p.add_argument("--regions", help="comma-separated region ids (default: every region of the batch)")
    where(p)
    for name in ("submit", "ingest", "simulate", "export", "import", "pull"):
        p = labels.choices[name]
        p.add_argument("--round", type=int, help="round (default: the round in progress)")
        where(p)
    for p in labels.choices.values():
        p.set_defaults(func=cmd_labels)

    access_parser = sub.add_parser("access", help="who works in the workspace (access.yaml): list; add, remove, role "
                                                  "(an admin; each change recorded and committed)")
    access_sub = access_parser.add_subparsers(dest="access_command", required=True)
    p = access_sub.add_parser("list", help="the people, their roles and key fingerprints")
    p.add_argument("--json", action="store_true")
    p = access_sub.add_parser("add", help="add a person with a role and key (to someone listed: the role, the key)")
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=["annotator", "reviewer", "admin"])
    p.add_argument("--key", help="their SSH public key: a .pub file or a key line (ed25519 or rsa)")
    p = access_sub.add_parser("remove", help="remove a person (their earlier signatures stay valid)")
    p.add_argument("name")
    p = access_sub.add_parser("role", help="replace a person's roles")
    p.add_argument("name")
    p.add_argument("roles", help="comma-separated: annotator, reviewer, admin")
    for name in ("add", "remove", "role"):
        add_person_options(access_sub.choices[name], help="the admin who changes it")
    for p in access_sub.choices.values():
        where(p)
        p.set_defaults(func=cmd_access)

    p = sub.add_parser("audit", help="the audit ledger: history of a sample, round or annotator; verify")
    p.add_argument("action", nargs="?", choices=["verify"],
                   help="verify: check the hash chain, the signatures (signed, unsigned, bad) and label files")
    p.add_argument("--sample", help="a region id or image stem")
    p.add_argument("--round", type=int)
    p.add_argument("--annotator")
    p.add_argument("--since", help="date or date-time (UTC), e.g. 2025-01-31")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--csv", action="store_true")
    where(p)
    p.set_defaults(func=cmd_audit)
