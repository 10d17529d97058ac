"""Head-only training: the fusion and colorization networks retrained over a frozen trunk.

With `train.freeze = ["low_level", "mid_level", "global_features"]` the expensive part of
the network (Table 1's low-level, mid-level and global features: 85 % of a forward) never
changes, so its outputs are computed once per image and kept in a local cache file; each
epoch then costs only the fusion and colorization networks (and the classification
network, unless it is frozen too). On 2 CPU cores that turns an epoch of MiniPlaces from
hours into minutes, which is what makes trying another loss possible without a GPU.

    extract   the trunk in eval mode over the training images, with the paper's
              augmentation drawn once per image and copy (train.feature_augmentations),
              -> RUN/features/ (mid-level maps in fp16, global vectors, targets, labels),
              and the training colours' histogram for the rebalanced loss
    train     shuffled batches from the cache through fusion -> colorization, the loss of
              train.loss, checkpoints in the same format as the full loop (weights export
              and --resume work unchanged)

The cache records what it was made from (weights sha256, data, size, seed): a cache that
does not match is made again, never reused by mistake.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import torch

from archive_colorize.train.checkpoints import (
    list_checkpoints,
    load_checkpoint,
    read_metrics,
    save_checkpoint,
    write_metrics,
)
from archive_colorize.train.config import HEAD, TRUNK, Config
from archive_colorize.train.data import iter_raw_batches, prepare_batch, resolve_source
from archive_colorize.errors import ConfigError
from archive_colorize.train.loop import (
    _rng_state,
    _set_rng_state,
    _val_batches,
    as_floats,
    freeze,
    init_from_weights,
    make_optimizer,
    topk_hits,
    validate,
)
from archive_colorize.train.losses import ColourHistogram, colour_loss, rebalance_weights
from archive_colorize.model.network import ColorizationModel

# ---------------------------------------------------------------- the feature cache


class FeatureCache:
    """The frozen trunk's outputs for every kept training image, as memory-mapped arrays."""

    FILES = ("mid", "glob", "h512", "ab", "L", "label")

    def __init__(self, folder: str, meta: dict):
        self.folder, self.meta = folder, meta
        n = meta["count"]
        self.arrays = {k: np.load(os.path.join(folder, f"{k}.npy"), mmap_mode="r")[:n] for k in self.FILES}
        self.counts = torch.tensor(meta["colour_counts"], dtype=torch.float64)

    def __len__(self) -> int:
        return self.meta["count"]

    def batch(self, idx: np.ndarray, device) -> dict:
        idx = np.sort(idx)  # sequential reads from the memory map
        a = self.arrays
        return {
            "mid": torch.from_numpy(np.ascontiguousarray(a["mid"][idx])).float().to(device),
            "glob": torch.from_numpy(np.ascontiguousarray(a["glob"][idx])).to(device),
            "h512": torch.from_numpy(np.ascontiguousarray(a["h512"][idx])).to(device),
            "ab": torch.from_numpy(np.ascontiguousarray(a["ab"][idx])).float().to(device),
            "L": torch.from_numpy(np.ascontiguousarray(a["L"][idx])).float().to(device),
            "label": torch.from_numpy(np.ascontiguousarray(a["label"][idx])).long().to(device),
        }


def cache_identity(cfg: Config, weights_sha256: str) -> dict:
    return {
        "weights_sha256": weights_sha256,
        "train": cfg.data.train,
        "train_limit": cfg.data.train_limit,
        "scale": cfg.data.scale,
        "crop": cfg.data.crop,
        "augmentations": cfg.train.feature_augmentations,
        "seed": cfg.train.seed,
        "version": 2,
    }


@torch.inference_mode()
def extract(
    model: ColorizationModel, cfg: Config, folder: str, identity: dict, device, log=print
) -> FeatureCache:
    """Run the frozen trunk once over the training images (each augmentation drawn once)."""
    meta_path = os.path.join(folder, "meta.json")
    if os.path.isfile(meta_path):
        meta = json.loads(open(meta_path).read())
        if meta.get("identity") == identity:
            log(f"feature cache {folder}: {meta['count']} images, reused")
            return FeatureCache(folder, meta)
        log(f"feature cache {folder} was made from other weights, data or augmentation: made again")
    os.makedirs(folder, exist_ok=True)
    src = resolve_source(cfg.data.train, cfg.data.train_root or None)
    rows = _count_rows(src, cfg.data.train_limit or None) * cfg.train.feature_augmentations
    model.eval()
    s, g = cfg.data.crop, model.config.global_size
    c256 = model.mid_level[-1][0].out_channels
    cg = model.global_features.fc3[0].out_features if model.global_features is not None else 1
    c512 = model.global_features.fc2[0].out_features if model.global_features is not None else 1
    shapes = {
        "mid": ((rows, c256, -(-s // 8), -(-s // 8)), np.float16),
        "glob": ((rows, cg), np.float32),
        "h512": ((rows, c512), np.float32),
        "ab": ((rows, 2, s // 2, s // 2), np.float16),
        "L": ((rows, 1, s // 2, s // 2), np.float16),  # at the a*b* size, for the colourfulness loss
        "label": ((rows,), np.int16),
    }
    arrays = {
        k: np.lib.format.open_memmap(os.path.join(folder, f"{k}.npy"), mode="w+", dtype=dt, shape=sh)
        for k, (sh, dt) in shapes.items()
    }
    hist, n, filtered, t0 = ColourHistogram(), 0, 0, time.time()
    batch = 64
    for copy in range(cfg.train.feature_augmentations):
        for j, raw in enumerate(iter_raw_batches(src, batch, limit=cfg.data.train_limit or None)):
            b = prepare_batch(
                raw, train=True, size=s, scale=cfg.data.scale, seed=cfg.train.seed + 100_003 * copy + j
            )
            keep = b["keep"]
            filtered += int((~keep).sum())
            if not keep.any():
                continue
            L = torch.from_numpy(b["L"][keep]).to(device)
            low = model.low_level(L)
            mid = model.mid_level(low)
            k = len(L)
            arrays["mid"][n : n + k] = mid.cpu().numpy().astype(np.float16)
            if model.global_features is not None:
                glob_low = low if s == g else model.low_level(model.resize_for_global(L))
                g256, h512 = model.global_features(glob_low)
                arrays["glob"][n : n + k] = g256.cpu().numpy()
                arrays["h512"][n : n + k] = h512.cpu().numpy()
            arrays["ab"][n : n + k] = b["ab"][keep].astype(np.float16)
            arrays["L"][n : n + k] = torch.nn.functional.avg_pool2d(L, 2).cpu().numpy().astype(np.float16)
            arrays["label"][n : n + k] = b["label"][keep]
            hist.add(torch.from_numpy(b["ab"][keep]))
            n += k
            if j % 20 == 0:
                log(
                    f"features: {n} images ({filtered} filtered), {n / max(time.time() - t0, 1e-9):.1f} img/s"
                )
    for a in arrays.values():
        a.flush()
    meta = {
        "identity": identity,
        "count": n,
        "filtered": filtered,
        "colour_counts": hist.counts.tolist(),
        "seconds": round(time.time() - t0, 1),
    }
    tmp = meta_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(meta, f)
    os.replace(tmp, meta_path)  # the cache exists only once every array is written
    log(f"features: {n} images ({filtered} filtered) in {meta['seconds']:.0f} s")
    return FeatureCache(folder, meta)


def _count_rows(src, limit: int | None) -> int:
    if src.kind == "parquet":
        import fsspec
        import pyarrow.parquet as pq

        total = 0
        for p in src.paths:
            with fsspec.open(p, "rb") as f:
                total += pq.ParquetFile(f).metadata.num_rows
    else:
        from archive_colorize.train.data import read_places_list

        total = len(read_places_list(src))
    return min(total, limit) if limit else total


# ---------------------------------------------------------------- training


def train_head(cfg: Config, run_dir: str, resume: bool, categories: list[str], init: str | None) -> None:
    """Train the head over the cached trunk features, to cfg.train.steps."""
    from archive_colorize.model.weights import load_weights

    tc = cfg.train
    device = torch.device("cuda") if tc.use_gpu and torch.cuda.is_available() else torch.device("cpu")
    torch.manual_seed(tc.seed)
    model = ColorizationModel(cfg.model)
    state = None
    if resume and list_checkpoints(run_dir):
        state = load_checkpoint(list_checkpoints(run_dir)[-1][1])
        model.load_state_dict(state["model"])
        print(f"resumed from checkpoint at step {state['step']}", flush=True)
    elif init:
        print(init_from_weights(model, init), flush=True)
    else:
        raise ConfigError(
            "a frozen trunk (train.freeze) needs trained weights to start from", hint="pass --init WEIGHTS"
        )
    trunk_sha = state["trunk_sha256"] if state else load_weights(init).file_sha256
    model = model.to(device)
    folder = tc.feature_cache or os.path.join(run_dir, "features")
    cache = extract(model, cfg, folder, cache_identity(cfg, trunk_sha), device)
    if len(cache) < tc.batch_size:
        raise ConfigError(
            f"only {len(cache)} training images after the filter, fewer than train.batch_size {tc.batch_size}"
        )
    weights = (
        rebalance_weights(cache.counts, tc.rebalance_lambda, tc.rebalance_sigma)
        if tc.loss == "rebalanced"
        else None
    )
    freeze(model, list(dict.fromkeys(TRUNK + tuple(tc.freeze))))
    trainable = [
        n for n in ("classification",) + HEAD if n not in tc.freeze and getattr(model, n) is not None
    ]
    params = [p for n in trainable for p in getattr(model, n).parameters()]
    optimizer = make_optimizer(model, tc, params)
    step, images = 0, 0
    mean_ab = torch.zeros(2, dtype=torch.float64)
    history: list[dict] = []
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        step, images, mean_ab = state["step"], state["images"], state["mean_ab"].double()
        _set_rng_state(state["rng"])
        history = [r for r in read_metrics(run_dir) if r["step"] is not None and r["step"] <= step]
    val = _val_batches(cfg)
    per_epoch = len(cache) // tc.batch_size
    epoch_perm = {}

    def batch_at(k: int) -> np.ndarray:  # the k-th batch of the run, the same after a resume
        e, i = divmod(k, per_epoch)
        if e not in epoch_perm:
            epoch_perm.clear()
            epoch_perm[e] = np.random.default_rng(tc.seed + e).permutation(len(cache))
        return epoch_perm[e][i * tc.batch_size : (i + 1) * tc.batch_size]

    L_needed = tc.loss == "colourfulness"
    t0, t_log, acc = time.time(), time.time(), []
    deadline = t0 + tc.max_minutes * 60 if tc.max_minutes > 0 else float("inf")
    stop_at = tc.steps
    while step < stop_at:
        b = cache.batch(batch_at(step), device)
        for n in trainable:
            getattr(model, n).train()
        optimizer.zero_grad(set_to_none=True)
        pred = model.colorization(
            model.fusion(b["mid"], b["glob"] if model.global_features is not None else None)
        )
        L01 = b["L"] if L_needed else None
        colour = colour_loss(tc.loss, pred, b["ab"], L01, weights, tc.colourfulness_weight)
        cls = torch.zeros((), device=device)
        logits = None
        if "classification" in trainable and tc.alpha:
            logits = model.classification(b["h512"])
            cls = torch.nn.functional.cross_entropy(logits, b["label"])
        loss = colour + tc.alpha * cls
        loss.backward()
        optimizer.step()
        step += 1
        images += len(b["label"])
        mean_ab += b["ab"].double().mean(dim=(0, 2, 3)).cpu()
        acc.append(
            {
                "loss": loss.detach(),
                "colour_loss": colour.detach(),
                "class_loss": cls.detach(),
                "top1": topk_hits(logits, b["label"], 1),
                "top5": topk_hits(logits, b["label"], 5),
            }
        )
        if stop_at == tc.steps and time.time() > deadline:
            stop_at = step
        row = None
        if step % tc.log_every == 0 or step == stop_at:
            row = as_floats(acc)
            now = time.time()
            row["images_per_s"] = len(acc) * tc.batch_size / max(now - t_log, 1e-9)
            t_log, acc = now, []
        if val and (step % tc.eval_every == 0 or step == stop_at):
            row = (row or {}) | validate(model, val, device)
        if row is not None:
            row |= {
                "step": step,
                "images": images,
                "filtered": cache.meta["filtered"],
                "seconds": round(time.time() - t0, 1),
            }
            history.append(row)
            write_metrics(run_dir, history)
            shown = ", ".join(
                f"{k} {row[k]:.4g}"
                for k in ("loss", "colour_loss", "val_ab_mse", "val_psnr", "images_per_s")
                if k in row
            )
            print(f"step {step}/{stop_at}  {shown}", flush=True)
        if step % tc.checkpoint_every == 0 or step == stop_at:
            save_checkpoint(
                run_dir,
                {
                    "step": step,
                    "images": images,
                    "filtered": cache.meta["filtered"],
                    "mean_ab": mean_ab,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "config": cfg.to_dict(),
                    "categories": categories,
                    "rng": _rng_state(),
                    "trunk_sha256": trunk_sha,
                    "colour_weights": None if weights is None else weights.tolist(),
                },
                tc.keep_checkpoints,
            )
