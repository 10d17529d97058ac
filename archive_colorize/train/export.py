"""`weights export`: inference weights, describing themselves, from a training checkpoint."""

from __future__ import annotations

from archive_colorize.core.storage import resolve
from archive_colorize.errors import ConfigError
from archive_colorize.imaging.lab import AB_NORM
from archive_colorize.model.network import ColorizationModel
from archive_colorize.model.weights import save_weights
from archive_colorize.train.checkpoints import list_checkpoints, load_checkpoint, read_metrics
from archive_colorize.train.config import config_from_dict


def export_checkpoint(
    checkpoint: str, out: str, storage: str = "fp32", extra_training: dict | None = None
) -> dict:
    """Checkpoint (or a run folder: its latest checkpoint) -> inference weights with metadata."""
    fs, p = resolve(checkpoint)
    if fs.isdir(p):
        ckpts = list_checkpoints(checkpoint)
        if not ckpts:
            raise ConfigError(f"no checkpoints under {checkpoint}")
        checkpoint = ckpts[-1][1]
        run_dir = checkpoint.rsplit("/checkpoints/", 1)[0]
    else:
        run_dir = p.rsplit("/checkpoints/", 1)[0]
    state = load_checkpoint(checkpoint)
    cfg = config_from_dict(state["config"])
    model = ColorizationModel(cfg.model)
    model.load_state_dict(state["model"])
    history = read_metrics(run_dir)
    last_val = next(
        (r for r in reversed(history) if r.get("val_ab_mse") is not None and r["step"] <= state["step"]), {}
    )
    mean_ab01 = (state["mean_ab"] / max(state["step"], 1)).tolist()
    mean_ab = [v * AB_NORM["scale"] - AB_NORM["offset"] for v in mean_ab01]
    data = {
        "description": cfg.data.description,
        "train": cfg.data.train,
        "val": cfg.data.val,
        "images_seen": state["images"],
        "filtered_out": state["filtered"],
        "train_mean_ab": mean_ab,
    }
    metrics = {k: last_val[k] for k in ("val_ab_mse", "val_psnr", "val_top1", "val_top5") if k in last_val}
    if metrics:
        metrics["val_images"] = cfg.data.val_limit
    training = {"steps": state["step"], "checkpoint": checkpoint.rsplit("/", 1)[-1]} | (extra_training or {})
    recipe = cfg.to_dict()["train"] | {
        "augmentation": f"scale {cfg.data.scale}, random crop {cfg.data.crop}, hflip 0.5"
    }
    return save_weights(
        model,
        out,
        state["categories"],
        storage=storage,
        recipe=recipe,
        data=data,
        metrics=metrics,
        training=training,
    )
