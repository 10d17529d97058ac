"""Film clips made here with PyAV, for the reel tests and benchmarks/video.py: grey shots
panned across the bundled calibration photographs (so that optical flow has real texture),
hard cuts between them, a sine tone, a timecode, optionally an interlaced flag."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

PHOTOS = Path(__file__).resolve().parents[1] / "archive_colorize" / "calibration"
RATE = Fraction(24000, 1001)


def _shot(photo: str | Path, n: int, size: tuple[int, int], step: int) -> list[np.ndarray]:
    im = Image.open(PHOTOS / photo).convert("L")  # an absolute path stays itself
    w, h = size
    scale = max((w + step * n) / im.width, h / im.height) * 1.05
    im = im.resize((round(im.width * scale), round(im.height * scale)), Image.LANCZOS)
    a = np.asarray(im)
    top = (a.shape[0] - h) // 2
    return [a[top : top + h, i * step : i * step + w] for i in range(n)]


def make_clip(
    path: Path,
    frames_per_shot: int = 12,
    size: tuple[int, int] = (160, 112),
    photos: tuple[str, ...] = ("chelsea.jpg", "coffee.jpg", "rocket.jpg"),
    fmt: str = "matroska",
    codec: str = "libx264",
    audio: str | None = "flac",
    interlaced: bool = False,
    timecode: str | None = "01:00:00:00",
    step: int = 2,
    pix_fmt: str = "yuv420p",
) -> Path:
    import av

    from archive_colorize.video.frames import make_frame

    shots = [f for p in photos for f in _shot(p, frames_per_shot, size, step)]
    with av.open(str(path), "w", format=fmt) as out:
        v = out.add_stream(
            codec,
            rate=RATE,
            options={"g": "12", "bf": "2"}
            if codec == "libx264"
            else {"profile": "3"}
            if codec == "prores_ks"
            else {},
        )
        v.width, v.height, v.pix_fmt = size[0], size[1], pix_fmt
        v.time_base = 1 / RATE
        if interlaced:
            v.codec_context.field_order = 2  # tt: top field first
            v.codec_context.flags |= 1 << 29  # AV_CODEC_FLAG_INTERLACED_DCT
        if timecode:
            (out.metadata if fmt == "matroska" else v.metadata)["timecode"] = timecode
        a = None
        if audio:
            a = out.add_stream(audio, rate=48000, layout="mono")
        for i, g in enumerate(shots):
            if pix_fmt == "yuv420p":
                yuv = np.concatenate([g, np.full((size[1] // 2, size[0]), 128, np.uint8)])
                f = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
            else:  # a 10-bit master (ProRes 422 HQ: yuv422p10le): codes times 4, neutral chroma
                y = np.ascontiguousarray(g).astype("<u2") * 4
                c = np.full((size[1], size[0] // 2), 512, "<u2")
                f = make_frame(y, c, c, pix_fmt, i, 1 / RATE)
            f.pts, f.time_base = i, 1 / RATE
            for p in v.encode(f):
                out.mux(p)
        for p in v.encode():
            out.mux(p)
        if a is not None:
            seconds = len(shots) / RATE
            n = int(48000 * seconds)
            tone = (0.25 * np.sin(2 * np.pi * 440 * np.arange(n) / 48000)).astype(np.float32)
            size_ = a.codec_context.frame_size or 1024
            fmt_a = a.codec_context.format.name
            for k in range(0, n, size_):
                chunk = tone[k : k + size_]
                data = (chunk * 32767).astype(np.int16) if fmt_a.startswith("s16") else chunk
                af = av.AudioFrame.from_ndarray(data[None], format=fmt_a, layout="mono")
                af.sample_rate, af.pts = 48000, k
                for p in a.encode(af):
                    out.mux(p)
            for p in a.encode():
                out.mux(p)
    return path
