"""Training (paper §3.3-§4): joint loss, ADADELTA, checkpoints, Ray Train wiring, export.

`train_step` and `train_loop` are plain PyTorch: the same loop runs inside Ray Train workers
(DDP, data from a Ray Dataset shard) and in a single process on a machine without Ray.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from archive_colorize.errors import ConfigError
from archive_colorize.model.network import ColorizationModel
from archive_colorize.train.checkpoints import (
    list_checkpoints,
    load_checkpoint,
    read_metrics,
    save_checkpoint,
    write_metrics,
)
from archive_colorize.train.config import Config, config_from_dict
from archive_colorize.train.data import iter_raw_batches, prepare_batch, resolve_source
from archive_colorize.train.losses import colour_loss

# ---------------------------------------------------------------- the loss and one step


def joint_loss(model, L, ab, label, alpha: float, loss: str = "mse", beta: float = 0.0):
    """MSE on normalised a*b* (or another colour loss, losses.py) + alpha * cross-entropy
    (paper Eq. 5). Returns (total, colour, class, logits).

    The class loss is computed from the logits, which depend only on the classification,
    global and low-level networks, so its gradient reaches nothing else."""
    pred_ab, logits = model(L)
    colour = (
        F.mse_loss(pred_ab.float(), ab) if loss == "mse" else colour_loss(loss, pred_ab, ab, L, beta=beta)
    )
    if logits is None or alpha == 0:
        cls = torch.zeros((), device=L.device)
        return colour, colour, cls, logits
    cls = F.cross_entropy(logits.float(), label)
    return colour + alpha * cls, colour, cls, logits


def topk_hits(logits, label, k: int) -> torch.Tensor:
    """Fraction of the batch whose label is among the top k, as a 0-d tensor on the logits'
    device: reading it to the host would stall the GPU, so callers do that only when logging."""
    if logits is None:
        return torch.tensor(float("nan"), device=label.device)
    k = min(k, logits.shape[1])
    return (logits.topk(k, dim=1).indices == label[:, None]).any(1).float().mean()


def make_optimizer(model, tc, params=None) -> torch.optim.Optimizer:
    """The optimiser of train.optimizer over `params` (default: all of the model's)."""
    # foreach: one kernel per op across all parameters instead of one per tensor; Adam also
    # has a fused kernel on CUDA. (ADADELTA has no fused kernel in torch.)
    params = list(model.parameters() if params is None else params)
    cuda = params[0].is_cuda
    if tc.optimizer == "adadelta":
        return torch.optim.Adadelta(params, lr=tc.lr, rho=tc.rho, eps=tc.eps, foreach=cuda or None)
    if tc.optimizer == "adam":
        return torch.optim.Adam(params, lr=tc.lr, fused=True) if cuda else torch.optim.Adam(params, lr=tc.lr)
    if tc.optimizer == "sgd":
        return torch.optim.SGD(params, lr=tc.lr, momentum=0.9, foreach=cuda or None)
    raise ConfigError(f"train.optimizer must be adadelta, adam or sgd, not {tc.optimizer!r}")


def train_step(
    model,
    optimizer,
    batch: dict,
    alpha: float,
    device,
    bf16: bool = False,
    loss: str = "mse",
    beta: float = 0.0,
    frozen: tuple = (),
) -> dict:
    """One optimisation step on a prepared batch {L, ab, label} (torch tensors or numpy).

    Returns 0-d tensors on the device, not floats: a float() here would make the host wait
    for the GPU every step. The loop reads them only every log_every steps."""
    L, ab, label = (torch.as_tensor(batch[k]).to(device, non_blocking=True) for k in ("L", "ab", "label"))
    if device.type == "cuda":
        L = L.contiguous(memory_format=torch.channels_last)
    model.train()
    if frozen:
        freeze(_unwrap(model), list(frozen))  # their batch norms keep the statistics they were trained with
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(
        device_type=device.type, dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda"
    ):
        loss, colour, cls, logits = joint_loss(model, L, ab, label, alpha, loss, beta)
    loss.backward()
    optimizer.step()
    return {
        "loss": loss.detach(),
        "colour_loss": colour.detach(),
        "class_loss": cls.detach(),
        "top1": topk_hits(logits, label, 1),
        "top5": topk_hits(logits, label, 5),
    }


def as_floats(step_metrics: list[dict]) -> dict:
    """Mean of each metric over some steps, read to the host in one transfer."""
    keys = list(step_metrics[0])
    stacked = torch.stack([torch.stack([m[k].float() for k in keys]) for m in step_metrics]).cpu()
    return {k: float(v) for k, v in zip(keys, stacked.nanmean(0).tolist())}


@torch.inference_mode()
def validate(model, batches: list[dict], device) -> dict:
    """a*b* MSE (normalised units), PSNR of the RGB result, top-1/top-5 on grayscale input."""
    from archive_colorize.train.metrics import psnr_rgb

    model.eval()
    mse, psnr, t1, t5, n = 0.0, 0.0, 0.0, 0.0, 0
    for b in batches:
        L, ab, label = (torch.as_tensor(b[k]).to(device) for k in ("L", "ab", "label"))
        pred, logits = model(L)
        k = len(label)
        mse += float(F.mse_loss(pred.float(), ab)) * k
        psnr += float(psnr_rgb(L, pred.float(), ab).sum())
        t1 += float(topk_hits(logits, label, 1)) * k
        t5 += float(topk_hits(logits, label, 5)) * k
        n += k
    return {"val_ab_mse": mse / n, "val_psnr": psnr / n, "val_top1": t1 / n, "val_top5": t5 / n} if n else {}


def freeze(model: ColorizationModel, names: list[str]) -> None:
    """No gradient for the named sub-networks, and their batch norms kept in eval mode."""
    for n in names:
        sub = getattr(model, n, None)
        if sub is not None:
            sub.requires_grad_(False)
            sub.eval()


# ---------------------------------------------------------------- checkpoints


def _rng_state() -> dict:
    return {
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()[1]),
        "python_pos": random.getstate()[2],
    }


def _set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    random.setstate((3, tuple(s["python"]), s["python_pos"]))


# ---------------------------------------------------------------- the loop


@dataclass
class Context:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")


def _unwrap(model):
    """The plain ColorizationModel inside DDP and/or torch.compile wrappers."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def _local_batches(cfg: Config, per_worker: int, seed: int, workers: int = 0):
    """Endless prepared training batches without Ray (shuffled per epoch), for data that
    does not fit in device memory. `workers` threads prepare upcoming batches (Pillow and
    torch release the GIL); 0 = one per CPU, 1 = on this thread (the loader of old, kept as
    the baseline for benchmarks/train.py)."""
    import collections
    from concurrent.futures import ThreadPoolExecutor

    from archive_colorize.train.data import usable_cpus

    src = resolve_source(cfg.data.train, cfg.data.train_root or None)
    workers = workers or usable_cpus()

    def raw_batches():
        epoch = 0
        while True:
            pool = list(iter_raw_batches(src, per_worker * 8, limit=cfg.data.train_limit or None))
            order = np.random.default_rng(seed + epoch).permutation(len(pool))
            for j in order:
                raw = pool[j]
                perm = np.random.default_rng(seed + epoch + int(j)).permutation(len(raw["label"]))
                for i in range(0, len(perm) - per_worker + 1, per_worker):
                    idx = perm[i : i + per_worker]
                    yield {k: v[idx] for k, v in raw.items()}
            epoch += 1

    def prepare(raw):
        return prepare_batch(raw, train=True, size=cfg.data.crop, scale=cfg.data.scale)

    if workers == 1:
        yield from map(prepare, raw_batches())
        return
    with ThreadPoolExecutor(workers) as pool:
        ahead: collections.deque = collections.deque()
        for raw in raw_batches():
            ahead.append(pool.submit(prepare, raw))
            if len(ahead) >= 2 * workers:
                yield ahead.popleft().result()


def _val_batches(cfg: Config, batch: int = 64) -> list[dict]:
    if not cfg.data.val:
        return []
    src = resolve_source(cfg.data.val, cfg.data.val_root or None)
    out = []
    for raw in iter_raw_batches(src, batch, limit=cfg.data.val_limit or None):
        b = prepare_batch(raw, train=False, size=cfg.data.crop)
        out.append({k: b[k][b["keep"]] for k in ("L", "ab", "label")})
    return [b for b in out if len(b["label"])]


def use_resident_data(cfg: Config, device: torch.device, under_ray: bool) -> bool:
    """data.on_device: true, false, or auto (resident when the decoded set fits; under Ray
    Train, auto keeps the streaming Ray Data path, which spreads decoding over the cluster)."""
    mode = cfg.data.on_device
    if mode == "false" or (mode == "auto" and under_ray):
        return False
    from archive_colorize.train.device_data import fits

    src = resolve_source(cfg.data.train, cfg.data.train_root or None)
    if mode == "true":
        return True
    return fits(src, cfg.data.scale, device, cfg.data.train_limit or None)


def _resident_batches(cfg: Config, ctx: "Context", per_worker: int, seed: int, log):
    """Endless augmented batches from device-resident data; new Parquet parts join at each epoch."""
    from archive_colorize.train.device_data import DeviceDataset

    t0 = time.time()
    ds = DeviceDataset(
        cfg.data.train,
        cfg.data.train_root or None,
        ctx.device,
        scale=cfg.data.scale,
        crop=cfg.data.crop,
        limit=cfg.data.train_limit or None,
    )
    log(
        f"data on {ctx.device.type}: {len(ds)} images ({ds.filtered} filtered) at {ds.side}x{ds.side}, "
        f"{ds.nbytes / 2**30:.2f} GiB, loaded in {time.time() - t0:.1f} s"
    )
    order = torch.Generator().manual_seed(seed)  # the same permutation on every rank
    draws = torch.Generator(device=ctx.device).manual_seed(seed + 1000 * ctx.rank + 1)
    epoch, counted = 0, 0
    while True:
        if epoch:
            added = ds.refresh()
            if added:
                log(f"epoch {epoch}: {added} new images joined, {len(ds)} in all")
        for idx in ds.epoch(per_worker, order, ctx.rank, ctx.world):
            # the filter runs once per image at load (every rank loads all): report each removal once
            yield ds.batch(idx, draws), ds.filtered - counted
            counted = ds.filtered
        epoch += 1


def _streamed_batches(stream, device, world: int):
    """Prepared numpy batches -> (the kept rows as tensors on the device, rows filtered on all ranks)."""
    for b in stream:
        keep = np.asarray(b["keep"], bool)
        dropped = int((~keep).sum()) * world
        if not keep.any():
            if world == 1:
                yield None, dropped  # nothing to learn from: no step
                continue
            keep = np.ones_like(keep)  # every DDP rank must take every step, or the all-reduce hangs
        t = {k: torch.from_numpy(np.ascontiguousarray(np.asarray(b[k])[keep])) for k in ("L", "ab", "label")}
        if device.type == "cuda":
            t = {k: v.pin_memory().to(device, non_blocking=True) for k, v in t.items()}
        yield t, dropped


def check_init_architecture(mine, theirs, path: str) -> None:
    """--init needs the same network apart from the class count; name the key that differs."""
    for key in ("width", "global_branch", "global_size"):
        if getattr(mine, key) != getattr(theirs, key):
            raise ConfigError(
                f"--init {path} has model.{key} = {getattr(theirs, key)!r}, this config has "
                f"{getattr(mine, key)!r}",
                hint=f"set model.{key} = {getattr(theirs, key)!r} to fine-tune it",
            )


def init_from_weights(model: ColorizationModel, path: str) -> str:
    """Start from a weights file of the same architecture (fine-tuning). A different number
    of classes re-initialises only the classifier's last layer. Returns what was done."""
    from archive_colorize.model.weights import load_weights

    w = load_weights(path)
    mine, theirs = model.config, w.config
    check_init_architecture(mine, theirs, path)
    state = w.model.state_dict()
    if mine.num_classes != theirs.num_classes:
        state = {k: v for k, v in state.items() if not k.startswith("classification.fc2.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith("classification.fc2.") for k in missing), (missing, unexpected)
    note = f"initialised from {path}"
    if missing:
        note += f" (classifier re-initialised: {theirs.num_classes} -> {mine.num_classes} classes)"
    return note


def train_loop(loop_config: dict) -> None:
    """The per-worker loop (Ray Train calls it). loop_config: {config, run_dir, resume,
    categories, init, threads}."""
    Trainer(loop_config).run()


class Trainer:
    """One worker's training, one method per phase: where it runs, the model (from a
    checkpoint, from --init or new), the batches, then the steps with their logging,
    evaluation and checkpoints."""

    def __init__(self, loop_config: dict):
        self.loop_config = loop_config
        self.cfg = config_from_dict(loop_config["config"])
        self.tc, self.run_dir = self.cfg.train, loop_config["run_dir"]
        self.ctx, self.shard = self._place()
        self.step = self.images = self.filtered = 0
        self.mean_ab = torch.zeros(2, dtype=torch.float64)
        self.history: list[dict] = []
        self.model, self.forward, self.optimizer = self._build()
        self.stream = self._batches()
        self.val = _val_batches(self.cfg) if self.ctx.rank == 0 else []

    def log(self, msg: str) -> None:
        if self.ctx.rank == 0:
            print(msg, flush=True)

    def _place(self):
        """This worker's rank, device and data shard (none outside Ray Train)."""
        ctx, shard = Context(), None
        try:
            import ray.train

            tctx = ray.train.get_context()
            ctx = Context(tctx.get_world_rank(), tctx.get_world_size())
            shard = ray.train.get_dataset_shard("train")
        except Exception:  # not inside Ray Train
            pass
        if torch.cuda.is_available() and self.tc.use_gpu:
            ctx.device = torch.device("cuda", torch.cuda.current_device())
            torch.backends.cudnn.benchmark = (
                True  # training shapes are fixed: let cuDNN pick its fastest kernels
            )
        if self.loop_config.get("threads"):
            torch.set_num_threads(self.loop_config["threads"])
        return ctx, shard

    def _build(self):
        """The model and optimizer, from the last checkpoint when resuming, else from --init."""
        tc, ctx = self.tc, self.ctx
        torch.manual_seed(tc.seed + ctx.rank)
        random.seed(tc.seed + ctx.rank)
        model = ColorizationModel(self.cfg.model)
        state = None
        if self.loop_config.get("resume"):
            ckpts = list_checkpoints(self.run_dir)
            if ckpts:
                state = load_checkpoint(ckpts[-1][1])
                model.load_state_dict(state["model"])
        if state is None and self.loop_config.get("init"):
            self.log(init_from_weights(model, self.loop_config["init"]))
        if ctx.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        model = model.to(ctx.device)
        if tc.freeze:  # some sub-networks only (a whole frozen trunk goes to head.train_head instead)
            freeze(model, tc.freeze)
        optimizer = make_optimizer(model, tc)
        if state is not None:
            optimizer.load_state_dict(state["optimizer"])
            self.step, self.images, self.filtered = state["step"], state["images"], state["filtered"]
            self.mean_ab = state["mean_ab"].double()
            _set_rng_state(state["rng"])
            self.history = [
                r for r in read_metrics(self.run_dir) if r["step"] is not None and r["step"] <= self.step
            ]
            self.log(f"resumed from checkpoint at step {self.step}")
        self.mean_ab = self.mean_ab.to(ctx.device)
        if ctx.world > 1:
            import ray.train.torch

            model = ray.train.torch.prepare_model(model, move_to_device=False)
        return model, (torch.compile(model) if tc.compile else model), optimizer

    def _batches(self):
        """Resident on the device when it fits, else Ray's shard, else read here."""
        cfg, ctx, tc = self.cfg, self.ctx, self.tc
        per_worker = tc.batch_size // ctx.world
        if use_resident_data(cfg, ctx.device, under_ray=self.shard is not None):
            return _resident_batches(cfg, ctx, per_worker, tc.seed + self.step, self.log)
        if self.shard is not None:
            shard = self.shard

            def batches():
                while True:  # epochs; each pass re-reads and re-augments the shard
                    yield from shard.iter_batches(batch_size=per_worker, batch_format="numpy", drop_last=True)

            return _streamed_batches(batches(), ctx.device, ctx.world)
        return _streamed_batches(_local_batches(cfg, per_worker, tc.seed + self.step), ctx.device, ctx.world)

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "images": self.images,
            "filtered": self.filtered,
            "mean_ab": self.mean_ab.cpu(),
            "model": _unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "config": self.cfg.to_dict(),
            "categories": self.loop_config["categories"],
            "rng": _rng_state(),
        }

    def run(self) -> None:
        tc, ctx = self.tc, self.ctx
        t0, acc, t_log, img_log = time.time(), [], time.time(), 0
        deadline = t0 + tc.max_minutes * 60 if tc.max_minutes > 0 else float("inf")
        stop_at = tc.steps
        bar = _progress_bar(self.step, tc.steps) if ctx.rank == 0 and self.shard is None else None
        while self.step < stop_at:
            b, dropped = next(self.stream)
            self.filtered += dropped
            if b is None:
                continue
            acc.append(
                train_step(
                    self.forward,
                    self.optimizer,
                    b,
                    tc.alpha,
                    ctx.device,
                    tc.bf16,
                    tc.loss,
                    tc.colourfulness_weight,
                    tuple(tc.freeze),
                )
            )
            self.step += 1
            n = len(b["label"])
            self.images += n * ctx.world
            img_log += n * ctx.world
            self.mean_ab += b["ab"].double().mean(dim=(0, 2, 3))
            if (
                stop_at == tc.steps
                and (ctx.world == 1 or self.step % tc.log_every == 0)
                and _out_of_time(deadline, ctx)
            ):
                stop_at = (
                    self.step
                )  # out of time: finish this step as the last one (logged, evaluated, saved)
            row = None
            if self.step % tc.log_every == 0 or self.step == stop_at:
                row = as_floats(acc)  # the one host sync per log_every steps
                now = time.time()
                row["images_per_s"] = img_log / max(now - t_log, 1e-9)
                t_log, img_log, acc = now, 0, []
            if ctx.rank == 0 and self.val and (self.step % tc.eval_every == 0 or self.step == stop_at):
                # the bare module: DDP's forward broadcasts buffers, a collective the other ranks never join
                row = (row or {}) | validate(_unwrap(self.model), self.val, ctx.device)
            if row is not None and ctx.rank == 0:
                self._record(row, t0, stop_at, bar)
            if ctx.rank == 0 and (self.step % tc.checkpoint_every == 0 or self.step == stop_at):
                save_checkpoint(self.run_dir, self.state_dict(), tc.keep_checkpoints)
            if self.shard is not None:
                import ray.train

                ray.train.report({"step": self.step, **(row or {})})
        if bar is not None:
            bar.stop()

    def _record(self, row: dict, t0: float, stop_at: int, bar) -> None:
        """metrics.csv, and a line on the console."""
        row |= {
            "step": self.step,
            "images": self.images,
            "filtered": self.filtered,
            "seconds": round(time.time() - t0, 1),
        }
        self.history.append(row)
        write_metrics(self.run_dir, self.history)
        keys = ("loss", "colour_loss", "class_loss", "val_ab_mse", "val_psnr", "images_per_s")
        shown = ", ".join(f"{k} {row[k]:.4g}" for k in keys if k in row)
        if bar is None:
            print(f"step {self.step}/{stop_at}  {shown}", flush=True)
        else:
            bar.console.print(f"step {self.step}/{stop_at}  {shown}", highlight=False)
            bar.update(
                bar.tasks[0].id,
                completed=self.step,
                total=stop_at,
                info=f"loss {row.get('loss', float('nan')):.4g}",
            )


def _out_of_time(deadline: float, ctx: "Context") -> bool:
    """Whether to stop now. With several workers they must agree, or one would wait forever
    in the next all-reduce for a rank that stopped: the most impatient rank decides. (The
    loop asks every log_every steps then, so the extra collective stays rare.)"""
    late = time.time() > deadline
    if ctx.world == 1 or deadline == float("inf"):
        return late
    import torch.distributed as dist

    flag = torch.tensor([1.0 if late else 0.0], device=ctx.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def _progress_bar(start: int, total: int):
    """A rich progress display on a terminal; plain log lines otherwise (CI, Ray workers)."""
    import sys

    if not sys.stdout.isatty():
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn("[bold]training"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
    )
    bar.add_task("train", total=total, completed=start, info="")
    bar.start()
    return bar
