"""Training and evaluation data: Places file lists or Parquet shards of JPEG bytes.

The transforms here are plain functions over numpy batches, so they run inside Ray Data
`map_batches`, in a plain PyTorch loop on a machine without Ray, and in tests alike.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from archive_colorize.errors import ConfigError
from archive_colorize.core.formats import GRAY_MODES
from archive_colorize.core.storage import has_wildcard
from archive_colorize.imaging.lab import normalize_ab, rgb_to_lab

# The paper's filter (§4): drop grayscale images and images with little colour variance.
# A photo counts as colourless when the spread of its a*b* values, sqrt(var a* + var b*)
# over a 64x64 thumbnail, is below this many CIE units. Measured on 3,000 MiniPlaces
# images: the grayscale JPEGs (stored as RGB) score < 1e-4, then a gap; 3.0 removes them plus
# near-monochrome (toned) photos, 4.7% in all; the median photo scores 12.5 (docs/training.md).
MIN_COLOUR_STD = 3.0


@dataclass(frozen=True)
class Source:
    """Where images come from: Parquet shards (`image`, `label` columns) or a Places list."""

    kind: str  # "parquet" | "places"
    paths: tuple[str, ...]  # parquet files, or the one list file
    root: str | None = None  # places: the folder the list's paths are relative to


def resolve_source(spec: str, root: str | None = None) -> Source:
    """'x/train-*.parquet', 'x/val.parquet', 'x/train.txt' (Places205/365 list) -> Source."""
    from fsspec.core import url_to_fs

    spec = str(spec)
    fs, _ = url_to_fs(spec)
    prefix = (
        ""
        if "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
        else f"{fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]}://"
    )
    if spec.endswith((".txt", ".csv")):
        if not fs.exists(spec):
            raise ConfigError(f"data: file list not found: {spec}")
        if root is None:
            base = spec.rsplit("/", 1)[0]
            stem = spec.rsplit("/", 1)[1].split(".")[0].split("_")[0]
            candidates = (
                [f"{base}/{stem}", f"{base}/data", base] if stem.startswith("val") else [f"{base}/data", base]
            )
            root = next((c for c in candidates if fs.isdir(c)), base)
        return Source("places", (spec,), root)
    paths = sorted(fs.glob(spec)) if has_wildcard(spec) else [spec]
    paths = [p if p.startswith(prefix) else prefix + p for p in paths]
    if not paths or not all(fs.exists(p) for p in paths):
        raise ConfigError(f"data: no Parquet files match {spec}")
    return Source("parquet", tuple(paths))


def read_places_list(source: Source) -> list[dict]:
    """Places205 `path label` lines (also Places365's /a/x/y.jpg form) -> [{path, label}]."""
    import fsspec

    rows = []
    with fsspec.open(source.paths[0], "rt") as f:
        for n, line in enumerate(f, 1):
            parts = line.replace(",", " ").split()
            if not parts:
                continue
            if len(parts) < 2 or not parts[-1].lstrip("-").isdigit():
                raise ConfigError(f"data: {source.paths[0]} line {n} is not 'path label': {line.strip()!r}")
            rows.append(
                {"path": f"{source.root.rstrip('/')}/{parts[0].lstrip('/')}", "label": int(parts[-1])}
            )
    return rows


def _decode_rgb(data: bytes) -> tuple[np.ndarray, bool]:
    im = Image.open(io.BytesIO(data))
    gray = im.mode in GRAY_MODES
    return np.asarray(im.convert("RGB")), gray


def colour_spread(rgb01: torch.Tensor) -> torch.Tensor:
    """sRGB (N, 3, H, W) in [0, 1] -> (N,) sqrt(var a* + var b*) over a 64x64 thumbnail: the
    filter's measure, for the streaming path (one image) and device_data (whole chunks)."""
    t = F.interpolate(rgb01, size=(64, 64), mode="area")
    ab = rgb_to_lab(t)[:, 1:].flatten(2)
    return ab.var(dim=2).sum(1).sqrt()


def colour_std(rgb: np.ndarray) -> float:
    """colour_spread of one HxWx3 uint8 image."""
    return float(colour_spread(torch.from_numpy(np.array(rgb)).permute(2, 0, 1)[None].float() / 255)[0])


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, not the machine's count)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def prepare_batch(
    batch: dict, *, train: bool, size: int = 224, scale: int = 256, seed: int | None = None
) -> dict:
    """{image: bytes, label} -> {L (N,1,size,size), ab (N,2,size/2,size/2), label, keep, colour_std}.

    Train: scale to `scale`x`scale`, random `size` crop, flip with p=0.5 (paper §3.4).
    Eval: scale straight to `size`x`size`. `keep` is the paper's filter; rows are kept in
    the batch (not dropped here) so the consumer can count what the filter removed.
    Undecodable images are marked keep=False as well.
    """
    rng = np.random.default_rng(seed)
    images = batch["image"]
    n = len(images)
    L = np.zeros((n, 1, size, size), np.float32)
    ab = np.zeros((n, 2, size // 2, size // 2), np.float32)
    keep = np.zeros(n, bool)
    cstd = np.zeros(n, np.float32)
    for i, data in enumerate(images):
        try:
            rgb, gray = _decode_rgb(bytes(data))
        except Exception:
            continue
        cstd[i] = 0.0 if gray else colour_std(rgb)
        keep[i] = cstd[i] >= MIN_COLOUR_STD
        t = torch.from_numpy(np.array(rgb)).permute(2, 0, 1)[None].float() / 255
        if train:
            t = F.interpolate(t, size=(scale, scale), mode="bilinear", align_corners=False, antialias=True)
            y, x = rng.integers(0, scale - size + 1, size=2)
            t = t[:, :, y : y + size, x : x + size]
            if rng.random() < 0.5:
                t = t.flip(-1)
        else:
            t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        lab = rgb_to_lab(t.clamp(0, 1))
        L[i] = (lab[:, :1] / 100).numpy()[0]
        ab[i] = normalize_ab(F.interpolate(lab[:, 1:], scale_factor=0.5, mode="area")).numpy()[0]
    return {
        "L": L,
        "ab": ab,
        "label": np.asarray(batch["label"], dtype=np.int64),
        "keep": keep,
        "colour_std": cstd,
    }


def iter_raw_batches(source: Source, batch_size: int, columns=("image", "label"), limit: int | None = None):
    """Without Ray: yield {image, label} numpy batches from either format, in order."""
    import fsspec
    import pyarrow.parquet as pq

    seen = 0
    if source.kind == "parquet":
        for path in source.paths:
            with fsspec.open(path, "rb") as f:
                for rb in pq.ParquetFile(f).iter_batches(batch_size=batch_size, columns=list(columns)):
                    d = rb.to_pydict()
                    if limit is not None:
                        d = {k: v[: limit - seen] for k, v in d.items()}
                    seen += len(d["label"])
                    yield {k: np.asarray(v, dtype=object if k == "image" else None) for k, v in d.items()}
                    if limit is not None and seen >= limit:
                        return
    else:
        rows = read_places_list(source)[:limit]
        for i in range(0, len(rows), batch_size):
            chunk = rows[i : i + batch_size]
            yield {
                "image": np.asarray([_read(r["path"]) for r in chunk], dtype=object),
                "label": np.asarray([r["label"] for r in chunk]),
            }


def _read(path: str) -> bytes:
    import fsspec

    with fsspec.open(path, "rb") as f:
        return f.read()


def ray_dataset(source: Source, limit: int | None = None, task_cpus: float = 1.0):
    """The same rows as a Ray Dataset of {image, label}, read in parallel across the cluster."""
    import ray.data

    if source.kind == "parquet":
        ds = ray.data.read_parquet(list(source.paths), num_cpus=task_cpus).select_columns(["image", "label"])
    else:
        ds = ray.data.from_items(read_places_list(source)).map_batches(
            lambda b: {"image": np.asarray([_read(p) for p in b["path"]], dtype=object), "label": b["label"]},
            batch_format="numpy",
            num_cpus=task_cpus,
        )
    return ds.limit(limit) if limit else ds
