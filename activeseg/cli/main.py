"""The ``activeseg`` command line. The commands that take no campaign workspace (and ``init``, which makes
one, and ``predict``) take ``--params FILE`` and repeated ``--set k.p=v``; a campaign's commands read its
``params.yaml`` and refuse both, saying so (:func:`refuse_overrides`).

The library's commands are here; the campaign workspace's (``init``, ``step``, ``labels``, ``audit``) in
``cli/workspace.py``, the orchestration's (``server``, ``worker``, ``round``, ``status``, ``approve``,
``reject``, ``campaign``) in ``cli/orchestration.py``, ``demo`` in ``cli/demo.py`` and ``report`` (with
the comparison pages of ``simulate`` and ``benchmark``) in ``cli/report.py``. `main` maps every error a
user can act on to an exit status, in one place: 0 done, 1 data rejected or a round failed, 2 usage,
parameter or state error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.markup import escape

from activeseg.cli import demo, model, orchestration, workspace
from activeseg.cli import report as pages
from activeseg.cli.output import console, err, print_json, print_table, say
from activeseg.core.config import Config, load_config

DESCRIPTION = ("Active learning for biomedical image segmentation: simulate and benchmark strategies, or run "
               "a versioned labeling campaign under Prefect. The commands that take no workspace, init and "
               "predict take --params FILE and repeated --set key.path=value; a campaign's commands read its "
               "params.yaml. Exit status: 0 done, 1 data rejected or a round failed, 2 usage, parameter or state "
               "error, 130 interrupted.")

DEFAULT_PARAMS = Path("params.yaml")


def common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", type=Path, help="parameter file (default: ./params.yaml if present)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override one parameter, e.g. --set train.patience=3 (repeatable)")


class Refused(argparse.Action):
    """An option a command does not take: given, it stops the command with ``message`` (exit status 2)."""

    def __init__(self, option_strings: list[str], dest: str, message: str, **kwargs: Any):
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs)
        self.message = message

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        parser.error(f"{option_string}: {self.message}")


def commands(parser: argparse.ArgumentParser, name: str = "") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every command's parser below ``parser``, with its name (``"labels submit"``)."""
    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not groups:
        yield name, parser
    for group in groups:
        for word, sub in group.choices.items():
            yield from commands(sub, f"{name} {word}".strip())


def refuse_overrides(parser: argparse.ArgumentParser) -> None:
    """Give each command without ``--params``/``--set`` (a campaign's: it reads the workspace's params.yaml)
    both options, hidden, refusing with a message that says where its settings change and which commands
    take them."""
    found = dict(commands(parser))
    taking = [name for name, p in found.items() if "--set" in p._option_string_actions]
    for name, p in found.items():
        if name not in taking:
            p.add_argument("--params", "--set", action=Refused, nargs="?", message=(
                f"`activeseg {name}` works on a campaign workspace, whose settings are its params.yaml: edit that "
                "file to change one (between rounds; its data section stays as init wrote it). --params and "
                f"--set are taken by {', '.join(taking)}"))


def params_path(args: argparse.Namespace) -> Path | None:
    """``--params``, else ./params.yaml if present, else None (the defaults)."""
    return args.params if args.params is not None else (DEFAULT_PARAMS if DEFAULT_PARAMS.is_file() else None)


def config_from(args: argparse.Namespace) -> Config:
    return load_config(params_path(args), args.overrides)


def resolve_dataset(cfg: Config, dataset: str | None, out: Path) -> Path:
    """``--dataset`` or ``data.dataset``; ``synthetic`` generates the embedded default under OUT/data."""
    name = dataset or cfg.data.dataset
    if name != "synthetic":
        return Path(name)
    from activeseg.core.synthetic import synthesize

    target = out / "data"
    if not (target / "images").is_dir():
        s = cfg.data.synthetic
        console.print(f"generating the synthetic dataset ({s.n} images of {s.size} px) in {target}")
        synthesize(target, n=s.n, size=s.size, seed=s.seed, classes=cfg.data.classes,
                   style_weights=s.style_weights, object_weights=s.object_weights)
    return target


def cmd_synthesize(args: argparse.Namespace) -> int:
    from activeseg.core.synthetic import synthesize

    cfg = config_from(args)
    s = cfg.data.synthetic
    out = synthesize(args.out, n=args.n or s.n, size=args.size or s.size,
                     seed=s.seed if args.seed is None else args.seed, classes=cfg.data.classes,
                     style_weights=s.style_weights, object_weights=s.object_weights)
    console.print(f"wrote {out}/images and {out}/masks")
    return 0


def cmd_strategies(args: argparse.Namespace) -> int:
    from activeseg.strategies import STRATEGIES

    rows = []
    for name, cls in sorted(STRATEGIES.items()):
        doc = (sys.modules[cls.__module__].__doc__ or "").strip().split("\n")[0]
        options = ", ".join(f"{key}={f.default!r}" for key, f in cls.Options.model_fields.items())
        rows.append((name, "yes" if cls.needs_model else "no", doc, options or "-"))
    print_table(("strategy", "needs model", "description", "options (query.options.<strategy>.<option>)"), rows)
    return 0


SUMMARY_COLUMNS = ("strategy", "seeds", "rounds", "AUC Dice (mean +- std)", "final Dice")


def summary_rows(results: dict) -> list[tuple]:
    return [(name, s["seeds"], s["rounds"], f"{s['auc_dice_mean']:.4f} +- {s['auc_dice_std']:.4f}",
             f"{s['final_dice_mean']:.4f}") for name, s in results["summary"].items()]


def print_summary(results: dict) -> None:
    print_table(SUMMARY_COLUMNS, summary_rows(results), title="simulation")


def cmd_simulate(args: argparse.Namespace) -> int:
    from activeseg.loop.simulate import simulate

    cfg = config_from(args)
    out = Path(args.out)
    dataset = resolve_dataset(cfg, args.dataset, out)
    strategies = args.strategy or [cfg.query.strategy]
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [cfg.train.seed]
    results = simulate(cfg, dataset, strategies, seeds, out, rounds=args.rounds, progress=not args.quiet)
    print_summary(results)
    page = pages.write_comparison("simulation", out, SUMMARY_COLUMNS, summary_rows(results), [])
    console.print(f"results: {out / 'results.json'}\nplot:    {out / 'learning_curves.png'}\nreport:  {page}")
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from activeseg.loop.benchmark import COLUMNS, run_benchmark, table_rows

    cfg = config_from(args)
    out = Path(args.out)
    dataset = resolve_dataset(cfg, args.dataset, out)
    strategies = [s for item in args.strategies for s in item.split(",")] if args.strategies else [cfg.query.strategy]
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    if args.regimes:
        return regime_benchmark(args, dataset, strategies, seeds)
    report = run_benchmark(cfg, dataset, strategies, seeds, out, rounds=args.rounds, progress=not args.quiet)
    title = f"benchmark ({report['granularity']}, seeds {report['seeds']})"
    print_table(COLUMNS, table_rows(report), title=title)
    for warning in report["protocol"]["warnings"]:
        say(f"warning: {warning}")
    page = pages.write_comparison(title, out, COLUMNS, table_rows(report), report["protocol"]["warnings"])
    console.print(f"wall time {report['wall_seconds']:.0f} s; report {out / 'benchmark.md'}, "
                  f"{out / 'benchmark.json'} and {page}; plot {out / 'learning_curves.png'}")
    return 0


def regime_benchmark(args: argparse.Namespace, dataset: Path, strategies: list[str], seeds: list[int] | None) -> int:
    """``benchmark --regimes FILE``: training regimes against ``plain`` (activeseg.loop.benchmark)."""
    from activeseg.loop.regimes import REGIME_COLUMNS, read_regimes, regime_rows, run_regime_benchmark

    report = run_regime_benchmark(params_path(args), args.overrides, read_regimes(args.regimes), dataset,
                                  strategies, seeds, args.out, rounds=args.rounds, progress=not args.quiet)
    title = f"regime benchmark (seeds {report['seeds']})"
    rows = regime_rows(report["comparison"])
    print_table(REGIME_COLUMNS, rows, title=title)
    for warning in report["protocol"]["warnings"]:
        say(f"warning: {warning}")
    page = pages.write_comparison(title, args.out, REGIME_COLUMNS, rows, report["protocol"]["warnings"])
    console.print(f"wall time {report['wall_seconds']:.0f} s; report {args.out / 'benchmark.md'}, "
                  f"{args.out / 'benchmark.json'} and {page}")
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    from activeseg.metrics import METRICS, evaluate_folders

    result = evaluate_folders(args.pred, args.gt, classes=args.classes)
    if args.json:
        print_json(result)
        return 0
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    rows = [(stem, *(fmt(m[k]) for k in METRICS)) for stem, m in result["per_image"].items()]
    print_table(("image", *METRICS), [*rows, ("mean", *(fmt(result["mean"][k]) for k in METRICS))])
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """A campaign on the synthetic data through the real path: workspace, local Prefect server, worker,
    rounds that suspend for the simulated annotator's labels and resume (``activeseg simulate`` runs
    the plain simulation)."""
    return demo.run_demo(args.out, args.rounds or 3, args.overrides, args.params)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="activeseg", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="dataset utilities").add_subparsers(dest="data_command", required=True)
    p = data.add_parser("synthesize", help="write the synthetic intensive-cell dataset")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--n", type=int)
    p.add_argument("--size", type=int)
    p.add_argument("--seed", type=int)
    common(p)
    p.set_defaults(func=cmd_synthesize)

    p = sub.add_parser("strategies", help="list the query strategies")
    common(p)
    p.set_defaults(func=cmd_strategies)

    for name, func, helptext in (("simulate", cmd_simulate, "simulated campaign: oracle answers from ground truth"),
                                 ("demo", cmd_demo, "a short campaign on the synthetic data under Prefect")):
        p = sub.add_parser(name, help=helptext)
        if name == "simulate":
            p.add_argument("--dataset", help="dataset folder, or 'synthetic' (default: data.dataset)")
            p.add_argument("--strategy", action="append", help="strategy name (repeatable)")
            p.add_argument("--out", type=Path, required=True)
        else:
            p.add_argument("--out", type=Path, default=Path("demo-output"))
        p.add_argument("--rounds", type=int)
        if name == "simulate":
            p.add_argument("--seeds", help="comma-separated, e.g. 0,1,2")
            p.add_argument("--quiet", action="store_true", help="no progress bars")
        common(p)
        p.set_defaults(func=func)

    p = sub.add_parser("benchmark", help="compare strategies (with random and full as references)")
    p.add_argument("--dataset", help="dataset folder, or 'synthetic' (default: data.dataset)")
    p.add_argument("--strategies", action="append", help="comma-separated strategy names (repeatable)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--rounds", type=int)
    p.add_argument("--seeds", help="comma-separated, e.g. 0,1,2 (default: 6 seeds from train.seed)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--regimes", type=Path, metavar="FILE",
                   help="compare training regimes instead: YAML mapping a name to a list of key.path=value "
                        "overrides, against plain (random and full, no overrides); arms regime/strategy")
    common(p)
    p.set_defaults(func=cmd_benchmark)

    p = sub.add_parser("metrics", help="Dice, VOE, MSD and HD95 of predicted masks against ground truth")
    p.add_argument("--pred", type=Path, required=True)
    p.add_argument("--gt", type=Path, required=True)
    p.add_argument("--classes", type=int)
    p.add_argument("--json", action="store_true")
    common(p)
    p.set_defaults(func=cmd_metrics)

    workspace.add_commands(sub, common)
    model.add_commands(sub, common, config_from)
    orchestration.add_commands(sub)
    pages.add_command(sub)
    refuse_overrides(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        err.print("interrupted: rerun the same command to resume")
        return 130
    except Exception as exc:
        known = exit_status(exc)
        if known is None:
            raise
        code, label = known
        err.print(f"[bold red]{label}:[/] {escape(str(exc))}", highlight=False)
        return code


def exit_status(exc: Exception) -> tuple[int, str] | None:
    """The exit status and label of an error the user can act on (its message says what to do), or
    None for anything else (a bug: its traceback is shown). 1: data rejected (a label batch, a dataset
    that failed validation); 2: a wrong parameter, path or state, a refused round operation, an
    unreachable server or object store, a broken ledger, a failed resume, a timeout."""
    from activeseg.orchestration.engine import ResumeError
    from activeseg.orchestration.guard import RoundError
    from activeseg.orchestration.server import ServerError
    from activeseg.workspace.ledger import LedgerError
    from activeseg.workspace.storage import StoreError
    from activeseg.workspace.validation import ValidationFailed
    from activeseg.workspace.workspace import BatchRejected

    if isinstance(exc, (BatchRejected, ValidationFailed)):
        return 1, "rejected"
    if isinstance(exc, (ValueError, FileNotFoundError, RoundError, ServerError, ResumeError, StoreError, LedgerError,
                        TimeoutError)):
        return 2, "error"
    return None


if __name__ == "__main__":
    sys.exit(main())
