"""One chunk of one shot through the model, and one reel's outputs from its segments.

`colour_chunk` is the unit of work a model actor runs: decode only that chunk (seeking to
the keyframe before it), compute the shot's global feature once (the mean over frames
sampled from the whole shot, or a style image's), run each frame's local path, optionally
blend along optical flow, and write the chunk's segments. A chunk depends on nothing but the
reel, its shot's bounds and the engine, so a chunk redone after a crash gives the same bytes.
`finish_reel` joins the segments into the outputs, once every chunk of the reel is done."""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from archive_colorize.core.storage import atomic_write_bytes, is_local, resolve
from archive_colorize.imaging.images import working_copy
from archive_colorize.imaging.provenance import DIGITAL_SOURCE_TYPE, METHOD, Provenance
from archive_colorize.model.engine import scale_chroma
from archive_colorize.video import encode, frames, temporal
from archive_colorize.video.probe import Reel, ReelError
from archive_colorize.video.shots import Chunk

SEGMENTS = "_segments"  # OUT/_segments/<reel>/<chunk>.<fmt>.nut: the chunks done so far
GLOBAL_SAMPLES = 8  # frames per shot whose global features are averaged


@dataclass
class ReelPlan:
    """What every task of a reel needs to know, made once when the reel is probed."""

    id: str
    source: str  # a URL fsspec opens
    reel: Reel
    chunks: list[Chunk]
    name: str  # the outputs' file name without extension
    temporal: str
    formats: tuple[str, ...]
    out_url: str  # OUT

    def segment(self, chunk: int, fmt: str) -> str:
        return f"{self.out_url.rstrip('/')}/{SEGMENTS}/{self.name}/{chunk:05d}.{fmt}.nut"

    def output(self, fmt: str) -> str:
        return f"{self.out_url.rstrip('/')}/video/{self.name}.{fmt}"


@contextmanager
def _open(url: str, storage_options: dict):
    """The reel, opened for seeking: a local path directly, a remote one through fsspec
    (closed with the container: PyAV leaves a file object it was given open)."""
    import av

    fs, path = resolve(url, storage_options)
    if is_local(fs):
        with av.open(path) as container:
            yield container
        return
    with fs.open(path, "rb") as f, av.open(f) as container:
        yield container


def _sampled(a: int, b: int, n: int = GLOBAL_SAMPLES) -> list[int]:
    return (
        sorted({a + (2 * i + 1) * (b - a) // (2 * n) for i in range(n)}) if b - a > n else list(range(a, b))
    )


def colour_chunk(
    engine,
    plan: ReelPlan,
    chunk: Chunk,
    storage_options: dict | None = None,
    style: torch.Tensor | None = None,
) -> dict:
    """Colour one chunk and write its segments; returns the chunk's row for the progress log."""
    t0 = time.time()
    so = storage_options or {}
    reel, pix_fmt = plan.reel, frames.output_pix_fmt(plan.reel)
    ws = engine.working_size
    with _open(plan.source, so) as container:
        decoded = frames.decode(container, reel, chunk.start, chunk.stop)
        glob = None
        if plan.temporal != "none":
            if style is not None:
                glob, _ = engine.shot_global([working_copy(style, ws)])
            else:
                picks = []
                for k in _sampled(chunk.shot_start, chunk.shot_stop):
                    ((_, y),) = frames.decode(container, reel, k, k + 1)
                    picks.append(working_copy(frames.lightness(y, reel.full_range), ws))
                glob, _ = engine.shot_global(picks)
    Ls, xs, abs_ = [], [], []
    for _, y in decoded:
        L = frames.lightness(y, reel.full_range)
        x = working_copy(L, ws)
        ab = engine.predict_working(x).ab if plan.temporal == "none" else engine.predict_local(x, glob)
        Ls.append(L)
        xs.append(x[0, 0] * 100.0)
        abs_.append(scale_chroma(ab, engine.chroma_gain))
    if plan.temporal == "flow":
        abs_ = temporal.blend(xs, abs_)
    err, pairs = temporal.warp_error(xs, abs_)
    skip = chunk.first_written - chunk.start
    made = []
    for (pts, y), L, ab in list(zip(decoded, Ls, abs_))[skip:]:
        if not torch.isfinite(ab).all():
            raise ReelError(f"the model gave non-finite colour at PTS {pts}")
        cb, cr = frames.chroma(L, ab, reel, pix_fmt)
        made.append(frames.make_frame(y, cb, cr, pix_fmt, pts, reel.time_base))
    shas = {}
    with tempfile.TemporaryDirectory(prefix="archive-colorize-seg-") as tmp:
        for fmt in plan.formats:
            local = os.path.join(tmp, f"{fmt}.nut")
            encode.write_segment(local, made, fmt, reel, pix_fmt)
            data = open(local, "rb").read()
            shas[fmt] = hashlib.sha256(data).hexdigest()
            atomic_write_bytes(plan.segment(chunk.index, fmt), data, fs=resolve(plan.out_url, so)[0])
    return {
        "id": plan.id,
        "chunk": chunk.index,
        "shot": chunk.shot,
        "first_frame": chunk.first_written,
        "stop_frame": chunk.stop,
        "frames": len(made),
        "sha256": ";".join(f"{k}:{v}" for k, v in sorted(shas.items())),
        "warp_error_sum": err,
        "warp_pairs": pairs,
        "mean_chroma": float(np.mean([float(ab.norm(dim=0).mean()) for ab in abs_[skip:]])),
        "seconds": round(time.time() - t0, 3),
    }


def chunk_is_done(plan: ReelPlan, row: dict, storage_options: dict | None = None) -> bool:
    """A chunk whose row is in the log counts only if its segments are there, with the
    bytes the row names (a segment is written before its row, atomically)."""
    fs = resolve(plan.out_url, storage_options or {})[0]
    want = dict(kv.split(":", 1) for kv in (row.get("sha256") or "").split(";") if kv)
    for fmt in plan.formats:
        path = resolve(plan.segment(row["chunk"], fmt), storage_options or {})[1]
        if fmt not in want or not fs.exists(path):
            return False
        if hashlib.sha256(fs.cat_file(path)).hexdigest() != want[fmt]:
            return False
    return True


def tags(provenance: Provenance, plan: ReelPlan) -> dict:
    """Matroska tags and MP4 metadata: the same words as a still's XMP."""
    return {
        "DIGITAL_SOURCE_TYPE": DIGITAL_SOURCE_TYPE,
        "SOFTWARE": provenance.software,
        "WEIGHTS_SHA256": provenance.weights_sha256,
        "COMMENT": f"Colour added by a trained model (archive-colorize; {METHOD}); "
        f"the Y plane is the source's, temporal mode {plan.temporal}",
    }


def finish_reel(plan: ReelPlan, provenance: Provenance, storage_options: dict | None = None) -> dict:
    """Join the reel's segments into its outputs (atomically); their sha256 by format."""
    so = storage_options or {}
    out_fs = resolve(plan.out_url, so)[0]
    shas = {}
    with tempfile.TemporaryDirectory(prefix="archive-colorize-join-") as tmp:
        src_fs, src_path = resolve(plan.source, so)
        source = src_path
        if not is_local(src_fs):
            source = os.path.join(tmp, "source")
            src_fs.get_file(src_path, source)
        for fmt in plan.formats:
            segs = []
            for c in plan.chunks:
                seg_fs, seg_path = resolve(plan.segment(c.index, fmt), so)
                local = os.path.join(tmp, f"{c.index:05d}.{fmt}.nut")
                seg_fs.get_file(seg_path, local)
                segs.append(local)
            joined = os.path.join(tmp, f"out.{fmt}")
            encode.join(
                segs, source, plan.reel, fmt, joined, tags(provenance, plan), provenance.xmp(None, plan.id)
            )
            data = open(joined, "rb").read()
            if provenance.c2pa is not None and fmt == encode.ACCESS:  # C2PA reads and signs MP4, not Matroska
                from archive_colorize.imaging.c2pa_sign import sign

                title = f"{plan.id} ({plan.source})"
                data = sign(data, "mp4", None, None, plan.name, provenance.c2pa, title, mime="video/mp4")
            shas[fmt] = hashlib.sha256(data).hexdigest()
            atomic_write_bytes(resolve(plan.output(fmt), so)[1], data, fs=out_fs)
            for s in segs:
                os.unlink(s)
    return shas


def remove_segments(plan: ReelPlan, storage_options: dict | None = None) -> None:
    fs, path = resolve(f"{plan.out_url.rstrip('/')}/{SEGMENTS}/{plan.name}", storage_options or {})
    if fs.exists(path):
        fs.rm(path, recursive=True)
