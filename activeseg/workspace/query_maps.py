"""What the model that asked saw around each queried region: its uncertainty and its prediction over
the region's context crop (the crop of the label request, :func:`activeseg.workspace.exchange.requests.context_box`),
kept in ``query/maps/round-NNN.npz`` by the query step, inside the ``query`` stage output (DVC), so they are
versioned and pushed with the round. The campaign report draws them; nothing else reads them.

Per region id, two arrays over the context crop (h, w): ``<id>.uncertainty``, the per-pixel predictive
entropy H(mean_t p_t) of ``query.mc_passes`` MC-dropout passes (natural log, float16), and
``<id>.prediction``, the argmax of the mean probabilities (uint8 class ids). Decided here (the papers
draw uncertainty maps without fixing the measure): the entropy for every strategy, so maps of different
rounds and strategies share one scale (0 to ln C).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from activeseg.core.config import Config
from activeseg.core.data import Dataset
from activeseg.core.partition import Region
from activeseg.core.util import round_name
from activeseg.workspace.exchange.requests import context_box


def maps_path(root: Path, round_number: int) -> Path:
    return root / "query" / "maps" / f"{round_name(round_number)}.npz"


def context_region(region: Region, dataset: Dataset) -> Region:
    """The region's context crop (in-image, margin of half its longer side) as a region."""
    sample = dataset.samples[region.stem]
    return Region(region.stem, *context_box(region, sample.height, sample.width))


def save_query_maps(cfg: Config, dataset: Dataset, regions: list[Region], checkpoint: Path, path: Path,
                    seed: int) -> Path:
    """Write the maps of ``regions`` (see the module docstring) with the model at ``checkpoint`` to ``path``;
    the dropout masks are drawn from (``seed``, region id), so the same query writes the same file."""
    from activeseg.model.inference import mc_dropout_scores
    from activeseg.model.network import load_checkpoint, pick_device

    device = pick_device(cfg.train.device, cfg.train.threads)
    model, _ = load_checkpoint(checkpoint, device)
    crops = [context_region(r, dataset) for r in regions]
    scores = mc_dropout_scores(model, dataset, crops, cfg.query.mc_passes, cfg.query.batch_size, device,
                               keep_maps={c.id for c in crops}, seed=seed)
    arrays = {}
    for region, context in zip(regions, crops):
        kept = scores.maps[context.id]
        arrays[f"{region.id}.uncertainty"] = kept["entropy"].astype(np.float16)
        arrays[f"{region.id}.prediction"] = kept["mean_prob"].argmax(0).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


def read_query_maps(root: Path, round_number: int) -> dict[str, dict[str, np.ndarray]]:
    """{region id: {"uncertainty": (h, w) float, "prediction": (h, w) uint8}} of a round; empty when the
    round stored none (its query ran before the maps were kept)."""
    path = maps_path(root, round_number)
    if not path.is_file():
        return {}
    found: dict[str, dict[str, np.ndarray]] = {}
    with np.load(path) as data:
        for key in data.files:
            region_id, kind = key.rsplit(".", 1)
            found.setdefault(region_id, {})[kind] = data[key]
    return found
