"""The pretrain step (once per campaign, before the first training): the network pretrained on the pool by
:mod:`activeseg.model.pretrain`, versioned as the ``pretrain`` DVC stage and skipped while its inputs are
unchanged; and the pool's region embeddings by that network, which the query step stores."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from activeseg.core.util import canonical_json, read_json, sha256_file, sha256_text, utc_now, write_json
from activeseg.workspace.base import WorkspaceCore
from activeseg.workspace.records import Pretrained


PRETRAIN_CODE = Path(__file__).parents[1] / "model" / "pretrain.py"
"""The pretraining method's source: its hash is one of the step's inputs (read, not imported: a skipped
step never loads PyTorch)."""


def pretrain_inputs(ws: WorkspaceCore) -> str:
    """sha256 of what the pretrained network depends on: the content of the pool's images and its regions,
    the ``pretrain`` and ``model`` settings (``enabled`` aside) and the method's source code."""
    regions = ws.regions()
    images = {stem: sha256_file(ws.dataset.samples[stem].image_path) for stem in sorted({r.stem for r in regions})}
    settings = ws.cfg.pretrain.model_dump(exclude={"enabled"})
    return sha256_text(canonical_json({"images": images, "regions": sha256_file(ws.root / "pool" / "regions.json"),
                                       "pretrain": settings, "model": ws.cfg.model.model_dump(),
                                       "code": sha256_file(PRETRAIN_CODE)}))


def pretrain(ws: WorkspaceCore) -> Pretrained | None:
    """Pretrain the network on the pool (:mod:`activeseg.model.pretrain`) into pretrain/model.pt and
    pretrain/pretrain.json, the ``pretrain`` stage; skipped (the recorded result returned) while its inputs'
    hash (:func:`pretrain_inputs`) and the checkpoint are the recorded ones. Once per campaign in practice:
    the data is frozen. None with ``pretrain.enabled`` false (pretrain.json then says so, for DVC's output)."""
    info_path, checkpoint = ws.root / "pretrain" / "pretrain.json", ws.root / "pretrain" / "model.pt"
    if not ws.cfg.pretrain.enabled:
        write_json(info_path, {"enabled": False})
        return None
    key = pretrain_inputs(ws)
    recorded = read_json(info_path) if info_path.is_file() else {}
    info = Pretrained.model_validate(recorded) if "inputs_sha256" in recorded else None
    current = info is not None and info.inputs_sha256 == key and checkpoint.is_file()
    if not (current and sha256_file(checkpoint) == info.checkpoint_sha256):
        info = _pretrain(ws, key, checkpoint)
        write_json(info_path, info.model_dump())
    return info


def _pretrain(ws: WorkspaceCore, key: str, checkpoint: Path) -> Pretrained:
    from activeseg.model.network import pick_device
    from activeseg.model.pretrain import pretrain_model, save_pretrained

    cfg, regions = ws.cfg, ws.regions()
    device = pick_device(cfg.train.device, cfg.train.threads)
    params = {**{f"pretrain.{k}": v for k, v in cfg.pretrain.model_dump().items()}, "inputs_sha256": key,
              "regions": len(regions), "workspace": str(ws.root)}
    with ws.tracker().run("pretrain", params, {"activeseg.step": "pretrain"}) as run:
        def log(step: int, loss: float) -> None:
            if step % 25 == 0 or step == cfg.pretrain.steps - 1:
                run.log_metrics({"reconstruction_loss": loss}, step=step)

        result = pretrain_model(cfg, ws.dataset, regions, device, log)
        save_pretrained(result.model, checkpoint, cfg, ws.dataset.channels)
        run.log_metrics({"pretrain_seconds": result.seconds})
        run.log_artifact(checkpoint, "pretrain")
    return Pretrained(inputs_sha256=key, checkpoint="pretrain/model.pt", checkpoint_sha256=sha256_file(checkpoint),
                      mlflow_run_id=run.run_id, steps=len(result.losses), first_loss=result.losses[0],
                      last_loss=result.losses[-1], seconds=result.seconds, created=utc_now())


def pool_embeddings(ws: WorkspaceCore) -> dict[str, np.ndarray] | None:
    """Region id -> (D,) embedding by the pretrained encoder (:func:`activeseg.model.pretrain.region_embeddings`,
    unit norm) of every region of the pool, pretraining first when that is due (:func:`pretrain`); None
    without pretraining."""
    pretrained = pretrain(ws)
    if pretrained is None:
        return None
    from activeseg.model.network import load_checkpoint, pick_device
    from activeseg.model.pretrain import region_embeddings

    device = pick_device(ws.cfg.train.device, ws.cfg.train.threads)
    model, _ = load_checkpoint(ws.root / pretrained.checkpoint, device)
    regions = ws.regions()
    return dict(zip((r.id for r in regions), region_embeddings(model, ws.dataset, regions, device)))


def save_embeddings(ws: WorkspaceCore) -> dict[str, np.ndarray] | None:
    """query/embeddings.npz: :func:`pool_embeddings` (keyed by region id), stored by the query step for
    diversity-aware strategies; returned too. Nothing without pretraining."""
    embeddings = pool_embeddings(ws)
    if embeddings is not None:
        (ws.root / "query").mkdir(exist_ok=True)
        np.savez_compressed(ws.root / "query" / "embeddings.npz", **embeddings)
    return embeddings
