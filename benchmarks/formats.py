"""Export and import time of the label-exchange formats for one round of 500 regions (issue 10).

    .venv/bin/python benchmarks/formats.py [--regions 500] [--side 64]

Synthetic images (512 x 512), 64 x 64 regions, the ground truth as the "prediction" (the model's
forward pass is not part of the format cost). Prints one line per format: export seconds, import
seconds, files written, and whether the masks came back identical. Target: under 10 s each on 2 cores.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from activeseg.core.data import load_dataset
from activeseg.core.partition import Region, partition_image
from activeseg.core.synthetic import synthesize
from activeseg.loop.oracle import ground_truth
from activeseg.workspace.exchange.images import to_uint8
from activeseg.workspace.exchange.formats import cvat, labelstudio, qupath
from activeseg.workspace.exchange.formats.common import RequestItem
from activeseg.workspace.exchange.formats.service import make_request


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regions", type=int, default=500)
    parser.add_argument("--side", type=int, default=64)
    args = parser.parse_args()
    size = 512
    per_image = (size // args.side) ** 2
    with tempfile.TemporaryDirectory() as tmp:
        n_images = -(-args.regions // per_image)
        dataset = load_dataset(synthesize(Path(tmp) / "data", n=n_images, size=size, seed=0), classes=2)
        regions = [r for stem in dataset.stems for r in partition_image(stem, size, size, args.side, 0.0)]
        regions = regions[:args.regions]
        request = make_request(dataset, 1, [(r, 1.0 - i / len(regions)) for i, r in enumerate(regions)],
                               ("background", "foreground"))
        truth = {item.id: ground_truth(dataset, Region(item.stem, *item.box)) for item in request.items}

        def crop(item: RequestItem) -> np.ndarray:
            y0, x0, y1, x1 = item.crop_box
            return to_uint8(dataset.image(item.stem)[y0:y1, x0:x1])

        from label_studio_sdk.converter import brush  # noqa: F401  (its import, ~4 s, is not the format's cost)

        print(f"{len(request.items)} regions of {args.side} x {args.side} px on {n_images} images of {size} x {size}")
        for name in ("qupath", "cvat", "labelstudio"):
            out = Path(tmp) / name
            start = time.perf_counter()
            if name == "qupath":
                files = qupath.export(request, truth, out)
            elif name == "cvat":
                files = cvat.export(request, truth, out, crop)
            else:
                files = labelstudio.export(request, truth, out, crop)
            exported = time.perf_counter() - start
            path = out
            if name == "labelstudio":  # Label Studio's export once every prediction was accepted
                import json

                tasks = json.loads((out / "tasks.json").read_text())
                for task in tasks:
                    task["annotations"] = [{"id": 1, "result": task.pop("predictions")[0]["result"]}]
                path = out / "export.json"
                path.write_text(json.dumps(tasks))
            start = time.perf_counter()
            masks = {"qupath": qupath.read, "cvat": cvat.read, "labelstudio": labelstudio.read}[name](path, request)
            imported = time.perf_counter() - start
            same = all(np.array_equal(masks[i], truth[i]) for i in truth)
            print(f"{name:12s} export {exported:6.2f} s   import {imported:6.2f} s   {len(files):4d} files   "
                  f"identical: {same}")


if __name__ == "__main__":
    main()
