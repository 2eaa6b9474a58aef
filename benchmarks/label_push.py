"""Label exchange benchmark: pushing a label increment, and submitting a 100-region batch.

1. Push: two workspaces whose remotes hold 1x and 10x the data (the synthetic default, 24 and 240
   images of 128 px, pushed by ``activeseg init``) each get label increments of the same fixed size
   (``--masks`` random 64 x 64 masks) and push them the way an accepted batch is pushed
   (``dvc add`` then ``dvc push labels/round-NNN``, only the increment). Target: the 10x push takes at
   most 1.5x the 1x time. Local-folder remotes, and S3 through moto's server (``--s3``).
2. Submit + approve: ``activeseg labels submit`` of a 100-region batch (answers from the ground truth)
   into a workspace whose round-1 request has exactly 100 regions, then ``activeseg approve`` (submit
   only stages the batch; the approval writes, tracks, pushes and commits it): the two commands end to
   end (new processes), and the in-process ``Workspace.submit`` + ``Workspace.approve`` on an identical copy.

Run: ``.venv/bin/python benchmarks/label_push.py [--repeats 5] [--s3]``; it prints the figures.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from activeseg.workspace.exchange.images import mask_png
from activeseg.loop.oracle import ground_truth
from activeseg.core.partition import Region
from activeseg.core.util import round_name
from activeseg.workspace import Workspace
from activeseg.workspace.access import add, os_user

SMALL = ["model.width=4", "model.depth=2", "train.min_steps=2", "train.max_steps=2", "train.batch_size=4",
         "train.crop=32", "query.mc_passes=2", "tracking.mlflow=false"]


def timed(func) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def push_increments(ws: Workspace, repeats: int, masks: int, seed: int) -> list[float]:
    """Seconds to push each of ``repeats`` new increments of ``masks`` random masks."""
    rng = np.random.default_rng(seed)
    times = []
    for i in range(repeats):
        folder = ws.root / "labels" / round_name(900 + i)
        folder.mkdir(parents=True)
        for j in range(masks):
            (folder / f"mask-{j:03d}.png").write_bytes(mask_png(rng.integers(0, 2, (64, 64)).astype(np.uint8), 2))
        target = f"labels/{round_name(900 + i)}"
        ws.dvc("add", "-q", target)
        times.append(timed(lambda: ws.dvc("push", "-q", target)))
    return times


def bench_push(parent: Path, repeats: int, masks: int, remote: str | None, endpoint: str | None) -> dict[str, float]:
    medians = {}
    for scale, n in (("1x", 24), ("10x", 240)):
        start = time.perf_counter()
        url = f"{remote}/{scale}" if remote else None
        ws = Workspace.init(parent / f"push-{scale}", "synthetic", remote=url, endpoint=endpoint,
                            overrides=[*SMALL, f"data.synthetic.n={n}"])
        files = len(list((ws.root / "data").rglob("*.png")))
        ready = time.perf_counter() - start
        print(f"  {scale}: workspace with {n} images ({files} files pushed) ready in {ready:.1f} s")
        times = push_increments(ws, repeats, masks, seed=1)
        medians[scale] = statistics.median(times)
        print(f"  {scale}: push of {masks} masks: " + ", ".join(f"{t:.2f}" for t in times)
              + f" s (median {medians[scale]:.2f} s)")
    medians["ratio"] = medians["10x"] / medians["1x"]
    return medians


def bench_submit(parent: Path) -> dict[str, float]:
    overrides = [*SMALL, "data.synthetic.n=24", "partition.overlap=0.0", "partition.initial_labeled=4",
                 "query.strategy=random", f"query.budget_pixels={100 * 64 * 64}", "partition.side=64",
                 "data.synthetic.size=256", "query.allow_collapsed_model=true"]  # 2 training steps: it may collapse
    ws = Workspace.init(parent / "submit" / "ws", "synthetic", overrides=overrides)
    for role in ("annotator", "reviewer"):  # "bench" hands the batch in and approves it (oracle simulated: no four eyes)
        ws.change_access(os_user(), "bench", f"added bench as {role}", lambda old, role=role: add(old, "bench", role))
    ws.train(1)
    regions = [Region.from_dict(r) for r in ws.query(1)["regions"]]
    assert len(regions) == 100, len(regions)
    batch = parent / "batch"
    batch.mkdir()
    for region in regions:
        (batch / f"{region.id}.png").write_bytes(mask_png(ground_truth(ws.dataset, region), 2))
    copy = Path(shutil.copytree(parent / "submit", parent / "submit-copy", symlinks=True)) / "ws"
    activeseg, where = str(Path(sys.executable).parent / "activeseg"), ["--round", "1", "--workspace", str(ws.root)]
    commands = [[activeseg, "labels", "submit", str(batch), "--annotator", "bench", *where],
                [activeseg, "approve", "--by", "bench", *where]]
    cli = timed(lambda: [subprocess.run(command, check=True, capture_output=True) for command in commands])
    in_process = timed(lambda: submit_and_approve(Workspace.open(copy), batch))
    print(f"  labels submit + approve, 100 regions of 64 x 64: command {cli:.2f} s, in process {in_process:.2f} s")
    return {"cli": cli, "in_process": in_process}


def submit_and_approve(ws: Workspace, batch: Path) -> None:
    ws.submit(1, batch, "bench")
    ws.approve(1, "bench")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="increments pushed per remote")
    parser.add_argument("--masks", type=int, default=50, help="masks per increment")
    parser.add_argument("--s3", action="store_true", help="also push to S3 (moto's server on 127.0.0.1)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        parent = Path(tmp)
        print("push into a local-folder remote")
        results = {"local": bench_push(parent / "local", args.repeats, args.masks, None, None)}
        if args.s3:
            from moto.server import ThreadedMotoServer

            logging.getLogger("werkzeug").setLevel(logging.ERROR)
            os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
            os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            server.start()
            host, port = server.get_host_and_port()
            try:
                print("push into an S3 remote (moto over HTTP)")
                results["s3"] = bench_push(parent / "s3", args.repeats, args.masks, "s3://bench/campaign",
                                           f"http://{host}:{port}")
            finally:
                server.stop()
        print("submit")
        submit = bench_submit(parent)
    print("\nfigures")
    for name, r in results.items():
        verdict = "meets" if r["ratio"] <= 1.5 else "misses"
        print(f"  {name:5s} push of {args.masks} masks: 1x {r['1x']:.2f} s, 10x {r['10x']:.2f} s, "
              f"ratio {r['ratio']:.2f} ({verdict} the 1.5x target)")
    print(f"  labels submit + approve of 100 regions: {submit['cli']:.2f} s (commands), "
          f"{submit['in_process']:.2f} s (in process)")


if __name__ == "__main__":
    main()
