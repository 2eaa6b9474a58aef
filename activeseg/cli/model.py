"""The model as the product: ``predict`` (masks and uncertainty maps for new images of any size) and
``model list`` (the campaign's registered versions, their aliases and metrics).

A model is named by a registry alias of the workspace's campaign (``champion``, ``latest``, ``round-N``;
:mod:`activeseg.model.tracking`) or by a checkpoint path (``model/model.pt``), which needs no workspace.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from activeseg.cli.output import console, print_table, say
from activeseg.core.config import Config

UNCERTAINTY_HELP = ("also write MC-dropout uncertainty maps to OUT/uncertainty/<stem>.png: 16-bit PNG, pixel = "
                    "round(H / ln(classes) x 65535), H the predictive entropy of the mean of --passes dropout "
                    "passes (0: certain, 65535: uniform); the scale is repeated in OUT/uncertainty/scale.json")


def _registry(args: argparse.Namespace):
    from activeseg.cli.workspace import _workspace
    from activeseg.model.tracking import ModelRegistry

    ws = _workspace(args)
    tracker = ws.tracker()
    if not tracker.enabled:
        raise ValueError(f"{ws.root / 'params.yaml'}: tracking.mlflow is false, so no model is registered: "
                         "`model list` has nothing to list, and `predict --model` takes a checkpoint path (e.g. "
                         "model/model.pt) instead of champion, latest or round-N")
    return ws, ModelRegistry(tracker)


def cmd_predict(args: argparse.Namespace) -> int:
    from activeseg.core.config import load_config
    from activeseg.model.network import load_checkpoint, pick_device
    from activeseg.model.prediction import Tiling, predict_folder

    path = Path(args.model)
    with tempfile.TemporaryDirectory() as folder:
        if path.is_file():
            cfg = args.config(args)
        elif path.suffix or len(path.parts) > 1:
            raise FileNotFoundError(f"{path}: no such checkpoint (--model takes champion, latest, round-N or a path)")
        else:
            ws, registry = _registry(args)
            cfg = load_config(args.params or ws.root / "params.yaml", args.overrides)
            path = registry.checkpoint(args.model, Path(folder))
            say(f"model {registry.name} @ {args.model}")
        device = pick_device(cfg.train.device, cfg.train.threads)
        model, _ = load_checkpoint(path, device)
    passes = (args.passes or cfg.query.mc_passes) if args.uncertainty else 0
    written = predict_folder(model, args.images, args.out, device, Tiling(args.tile, args.overlap), passes,
                             progress=not args.quiet)
    count = sum(1 for _ in written)
    console.print(f"wrote {count} mask(s) to {args.out}" + (f" and uncertainty maps to {args.out / 'uncertainty'}"
                                                             if passes else ""))
    return 0


def cmd_model_list(args: argparse.Namespace) -> int:
    """The registered versions, one line each, readable at 80 columns: the split and the strategy are said
    in the title when every version shares them (a strategy that changed gets a column)."""
    from activeseg.metrics import METRICS

    _, registry = _registry(args)
    versions, aliases = registry.versions(), registry.aliases()
    if not versions:
        say(f"no model registered in {registry.name!r} yet (each round's evaluate step registers one)")
        return 0
    splits = sorted({v.tags.get("activeseg.split", "-") for v in versions})
    strategies = sorted({v.tags.get("activeseg.strategy", "-") for v in versions})
    shared = len(strategies) == 1
    title = f"registered model {registry.name}: {', '.join(splits)}-split metrics" + (
        f", strategy {strategies[0]}" if shared else "")
    columns = ("version", "round", "aliases", *METRICS, *([] if shared else ["strategy"]), "commit")
    print_table(columns, [_version_row(v, aliases[str(v.version)], shared) for v in versions], title=title,
                compact=True)
    return 0


def _version_row(version: Any, aliases: list[str], shared_strategy: bool) -> tuple[str, ...]:
    """One registered version's cells: its aliases but `round-N` (the round column says it), metrics to 4
    significant digits, the strategy unless every version shares it, the workspace commit (12 digits)."""
    from activeseg.metrics import METRICS
    from activeseg.model.tracking import ROUND_TAG

    tags = version.tags
    round_number = tags.get(ROUND_TAG, "-")
    named = ", ".join(a for a in aliases if a != f"round-{round_number}") or "-"
    metrics = (_four_digits(tags.get(f"activeseg.metric.{m}")) for m in METRICS)
    strategy = [] if shared_strategy else [tags.get("activeseg.strategy", "-")]
    return (str(version.version), round_number, named, *metrics, *strategy,
            tags.get("activeseg.workspace_commit", "-")[:12])


def _four_digits(value: str | None) -> str:
    """A metric tag (a number as text) to 4 significant digits; "-" when there is none."""
    return "-" if value is None else f"{float(value):.4g}"


def add_commands(sub: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None],
                 config: Callable[[argparse.Namespace], Config]) -> None:
    """Register ``predict`` and ``model list`` on the main parser's subcommands; ``config`` reads
    --params and --set (``cli.main.config_from``)."""
    p = sub.add_parser("predict", help="masks (class-id PNG) and uncertainty maps of new images of any size")
    p.add_argument("--model", required=True,
                   help="champion, latest or round-N (the workspace's registry), or a checkpoint path")
    p.add_argument("--images", type=Path, required=True, help="folder of images (png, tif, bmp, jpg)")
    p.add_argument("--out", type=Path, required=True, help="folder for <stem>.png masks (pixel = class id)")
    p.add_argument("--uncertainty", action="store_true", help=UNCERTAINTY_HELP)
    p.add_argument("--passes", type=int, help="MC-dropout passes for --uncertainty (default: query.mc_passes)")
    p.add_argument("--tile", type=int, default=512, help="tile side in px (a multiple of 2**model.depth)")
    p.add_argument("--overlap", type=int, default=128, help="least overlap of neighbouring tiles in px")
    p.add_argument("--workspace", type=Path, help="workspace of the registry (default: the one containing .)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    common(p)
    p.set_defaults(func=cmd_predict, config=config)
    p.epilog = ("--params/--set give train.device, train.threads and query.mc_passes (with an alias the "
                "default file is the workspace's params.yaml)")

    model = sub.add_parser("model", help="the campaign's registered models").add_subparsers(
        dest="model_command", required=True)
    p = model.add_parser("list", help="registered versions, their aliases and metrics")
    p.add_argument("--workspace", type=Path, help="workspace folder (default: the one containing .)")
    p.set_defaults(func=cmd_model_list)
