"""Training regimes (issue 21): ``run_regime_benchmark`` compares regimes, each a list of ``--set`` overrides,
against ``plain`` (no overrides: today's training). An arm is a (regime, strategy) pair, named
``regime/strategy``: ``plain`` runs ``random`` and ``full`` only, every other regime the strategies, ``random``
and ``full``, all on the same seeds and split (``OUT/<regime>/`` each, a ``simulate`` folder). Per arm
(``compare_regimes``): the AUC of :mod:`activeseg.loop.benchmark`, its paired difference to ``plain/random``, the revealed fraction at
which the seed-averaged curve reaches 95 % / 98 % of ``plain/full``'s mean Dice (the converged full of
today's training; the regime's own ``full`` Dice beside it), the saving against ``plain/random``, and the
mean wall and CPU seconds per round.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import numpy as np
import yaml

from activeseg.core.config import ConfigError, load_config
from activeseg.core.util import read_json, write_json
from activeseg.loop.benchmark import (LEVELS, REFERENCES, add_savings, check_split, default_seeds, fmt_ci, fmt_pct,
                                      fractions_to_full, level_key, protocol)
from activeseg.loop.curves import curves, plot_learning_curves
from activeseg.loop.protocol import auc_by_seed, mean_ci, paired_difference
from activeseg.loop.simulate import simulate

PLAIN = "plain"
BASELINE = f"{PLAIN}/random"
REGIME_COLUMNS = ("arm", "AUC Dice (mean +- 95% CI)", f"diff to {BASELINE} (mean +- 95% CI)", "p (Wilcoxon)",
                  *(f"pixels to {int(level * 100)}% of {PLAIN} full" for level in LEVELS), "own full Dice",
                  *(f"saving vs {BASELINE} at {int(level * 100)}%" for level in LEVELS),
                  "wall s / round", "CPU s / round")


def read_regimes(path: Path) -> dict[str, list[str]]:
    """The regimes of a YAML file mapping a name to a list of ``key.path=value`` overrides, after ``plain``
    (no overrides), which the file may list only empty."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise ConfigError(f"{path}: expected a mapping of regime name to a list of key.path=value overrides")
    if data.get(PLAIN):
        raise ConfigError(f"{path}: {PLAIN} is the baseline, today's training: it takes no overrides")
    if any("/" in str(name) for name in data):
        raise ConfigError(f"{path}: a regime name may not contain '/' (arms are named regime/strategy)")
    return {PLAIN: [], **{str(name): [str(o) for o in overrides] for name, overrides in data.items()
                          if name != PLAIN}}


def regime_arms(regime: str, strategies: list[str]) -> list[str]:
    """The strategies a regime runs: the references alone for ``plain``, else ``strategies`` and them."""
    return list(REFERENCES) if regime == PLAIN else list(dict.fromkeys([*strategies, *REFERENCES]))


def mean_of(runs: list[dict], strategy: str, key: str) -> float | None:
    """The mean of ``key`` over ``strategy``'s records that have it (None: none has)."""
    values = [r[key] for r in runs if r["strategy"] == strategy and key in r]
    return float(np.mean(values)) if values else None


def compare_regimes(results: dict[str, dict]) -> dict[str, dict]:
    """One row per arm ``regime/strategy`` from each regime's ``simulate`` results (module docstring);
    ``results`` holds ``plain`` with ``random`` (and ``full`` for the fractions to reach)."""
    plain = results[PLAIN]
    full = plain["summary"].get("full", {}).get("final_dice_mean")
    reference = auc_by_seed(plain["runs"], "random")
    table = {}
    for regime, res in results.items():
        mean_curves, runs = curves(res["runs"]), res["runs"]
        for name, summary in res["summary"].items():
            arm, c, auc = f"{regime}/{name}", mean_curves[name], auc_by_seed(runs, name)
            compared = arm != BASELINE and name != "full"
            row = {"auc_dice_ci": mean_ci(np.array(list(auc.values()))),
                   "diff_to_plain": paired_difference(auc, reference) if compared else None,
                   "final_dice_mean": summary["final_dice_mean"],
                   "full_dice": res["summary"].get("full", {}).get("final_dice_mean"),
                   "round_seconds": mean_of(runs, name, "round_seconds"),
                   "cpu_seconds": mean_of(runs, name, "cpu_seconds")}
            table[arm] = {**row, **fractions_to_full(c, full)}
    add_savings(table, lambda arm: BASELINE if arm != BASELINE and not arm.endswith("/full") else None)
    return table


def fmt_seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def regime_rows(comparison: dict[str, dict]) -> list[tuple[str, ...]]:
    """The rows of ``REGIME_COLUMNS``, best AUC first."""
    rows = []
    for arm, r in sorted(comparison.items(), key=lambda kv: -kv[1]["auc_dice_ci"]["mean"]):
        diff = r["diff_to_plain"]
        rows.append((arm, fmt_ci(r["auc_dice_ci"]), fmt_ci(diff, signed=True),
                     "-" if diff is None else f"{diff['p']:.4f}",
                     *(fmt_pct(r[f"fraction_to_{level_key(level)}_full"], "not reached") for level in LEVELS),
                     "-" if r["full_dice"] is None else f"{r['full_dice']:.3f}",
                     *(fmt_pct(r[f"saving_{level_key(level)}"], "-") for level in LEVELS),
                     fmt_seconds(r["round_seconds"]), fmt_seconds(r["cpu_seconds"])))
    return rows


def regime_markdown(report: dict) -> str:
    """``benchmark.md`` of a regime comparison: the regimes, the protocol and the table."""
    p = report["protocol"]
    lines = [f"# Regime benchmark: {report['dataset']}", "",
             f"seeds {report['seeds']}, {report['rounds']} rounds, wall time {report['wall_seconds'] / 60:.1f} min "
             f"on {report['machine']}.", "",
             *(f"- regime `{name}`: {', '.join(f'`{o}`' for o in overrides) or 'no overrides'}"
               for name, overrides in report["regimes"].items()),
             f"- AUC of Dice per seed; {p['interval']}, confidence {p['confidence']}; paired with {BASELINE}",
             f"- pixels to x % of {PLAIN} full: of {PLAIN}/full's mean Dice "
             f"({'-' if p['full_dice'] is None else format(p['full_dice'], '.3f')}); saving = 1 - arm / {BASELINE}",
             *(f"- warning: {w}" for w in p["warnings"]), "",
             "| " + " | ".join(REGIME_COLUMNS) + " |", "|" + "---|" * len(REGIME_COLUMNS),
             *("| " + " | ".join(row) + " |" for row in regime_rows(report["comparison"]))]
    return "\n".join(lines) + "\n"


def run_regime_benchmark(params: Path | None, overrides: list[str], regimes: dict[str, list[str]], dataset: Path,
                         strategies: list[str], seeds: list[int] | None, out: Path, rounds: int | None = None,
                         progress: bool = True) -> dict:
    """Simulate every regime's arms (``regime_arms``) in ``out/<regime>``, the settings of ``params`` with
    ``overrides`` then the regime's; writes ``benchmark.json``, ``benchmark.md`` and ``learning_curves.png``
    (every arm) in ``out``. A ValueError if a regime's split differs from ``plain``'s (no pairing)."""
    configs = {name: load_config(params, [*overrides, *extra], overrides_from=f"--set / regime {name}")
               for name, extra in regimes.items()}
    seeds = default_seeds(configs[PLAIN].train.seed) if seeds is None else seeds
    out = Path(out)
    start = time.perf_counter()
    results = {name: simulate(cfg, dataset, regime_arms(name, strategies), seeds, out / name, rounds=rounds,
                              progress=progress) for name, cfg in configs.items()}
    split = read_json(out / PLAIN / "split.json")
    for name in configs:
        if read_json(out / name / "split.json") != split:
            raise ValueError(f"{out / name / 'split.json'} differs from {PLAIN}'s: the arms would not be paired")
    report = {"dataset": str(dataset), "seeds": seeds, "rounds": rounds or configs[PLAIN].rounds,
              "regimes": regimes, "wall_seconds": time.perf_counter() - start,
              "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
              "protocol": {**protocol(results[PLAIN], seeds, check_split(out / PLAIN / "split.json")),
                           "reference": BASELINE},
              "comparison": compare_regimes(results)}
    write_json(out / "benchmark.json", report)
    (out / "benchmark.md").write_text(regime_markdown(report))
    arms = [{**r, "strategy": f"{name}/{r['strategy']}"} for name, res in results.items() for r in res["runs"]]
    plot_learning_curves(arms, out / "learning_curves.png", title="regimes: test Dice")
    return report
