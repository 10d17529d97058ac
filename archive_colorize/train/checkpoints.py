"""A training run's folder: checkpoints and metrics, local or on S3.

    RUN/checkpoints/step-000004000.pt   torch.save of plain tensors and containers
    RUN/metrics.csv                      one row per logged step
    RUN/config.json                      the resolved config

Written by train.py, read by it on resume and by train/export.py.
"""

from __future__ import annotations

import csv
import io
import re

import torch

from archive_colorize.errors import WeightsError
from archive_colorize.core.storage import atomic_write_bytes, is_local, join, resolve

METRIC_FIELDS = [
    "step",
    "images",
    "filtered",
    "loss",
    "colour_loss",
    "class_loss",
    "top1",
    "top5",
    "val_ab_mse",
    "val_psnr",
    "val_top1",
    "val_top5",
    "images_per_s",
    "seconds",
]


_CKPT = re.compile(r"step-(\d{9})\.pt$")


def checkpoint_dir(run_dir: str) -> str:
    return join(run_dir, "checkpoints")


def list_checkpoints(run_dir: str) -> list[tuple[int, str]]:
    fs, path = resolve(checkpoint_dir(run_dir))
    if not fs.exists(path):
        return []
    found = []
    for p in fs.ls(path, detail=False):
        m = _CKPT.search(p)
        if m:  # keep the protocol: a bare 'bucket/key' would later resolve as a local path
            found.append((int(m.group(1)), p if is_local(fs) else fs.unstrip_protocol(p)))
    return sorted(found)


def save_checkpoint(run_dir: str, state: dict, keep: int) -> str:
    """Atomic: the file appears whole under its final name, or not at all."""
    buf = io.BytesIO()
    torch.save(state, buf)
    fs, base = resolve(checkpoint_dir(run_dir))
    path = f"{base}/step-{state['step']:09d}.pt"
    atomic_write_bytes(path, buf.getvalue(), fs=fs)
    for _, old in list_checkpoints(run_dir)[:-keep]:
        fs.rm(old)
    return path


def load_checkpoint(path: str) -> dict:
    fs, p = resolve(path)
    with fs.open(p, "rb") as f:
        data = f.read()
    try:
        # weights_only: tensors and plain containers only, never arbitrary pickled objects
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # an UnpicklingError for a payload, a RuntimeError for a torn file
        why = (
            "it holds pickled objects other than tensors (refused, never run)"
            if type(e).__name__ == "UnpicklingError"
            else f"unreadable ({type(e).__name__})"
        )
        raise WeightsError(
            f"checkpoint {path} is not one this project wrote: {why}",
            hint="a checkpoint is loaded with torch.load(weights_only=True): tensors and plain containers only",
        ) from None


def write_metrics(run_dir: str, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=METRIC_FIELDS, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    fs, path = resolve(join(run_dir, "metrics.csv"))
    atomic_write_bytes(path, buf.getvalue().encode(), fs=fs)


def read_metrics(run_dir: str) -> list[dict]:
    fs, path = resolve(join(run_dir, "metrics.csv"))
    if not fs.exists(path):
        return []
    with fs.open(path, "rt") as f:
        return [
            {k: (float(v) if v not in ("", None) else None) for k, v in r.items()} for r in csv.DictReader(f)
        ]
