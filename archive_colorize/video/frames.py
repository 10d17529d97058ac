"""Between decoded frames and the model: the Y plane in, L* for the model, and colour back
out as chroma planes only.

The output's Y plane is the decoded source's, byte for byte: the video form of "the original
L* is kept". The colour is the still-image recombination (imaging/render.py: the frame's own
L* with the predicted a*b*, fitted into the sRGB gamut), turned into Cb/Cr in the reel's own
matrix and range and subsampled as the reel's chroma is."""

from __future__ import annotations

import numpy as np
import torch

from archive_colorize.imaging.lab import gray_to_lightness
from archive_colorize.imaging.render import recombine
from archive_colorize.video.probe import Reel, ReelError

MATRICES = {"bt709": (0.2126, 0.0722), "bt601": (0.299, 0.114)}  # (Kr, Kb)


def output_pix_fmt(reel: Reel) -> str:
    """A gray reel gains chroma planes; every other keeps its layout and bit depth (yuvj is
    yuv, full range)."""
    if reel.pix_fmt.startswith("gray"):
        return "yuv420p10le" if reel.bits == 10 else "yuv420p"
    return reel.pix_fmt.replace("yuvj", "yuv")


def _dtype(pix_fmt: str):
    return np.dtype("<u2") if pix_fmt.endswith("10le") else np.dtype(np.uint8)


def plane(frame, i: int) -> np.ndarray:
    """One plane's samples (uint8, or uint16 for the 10-bit formats), without the padding."""
    p, dt = frame.planes[i], _dtype(frame.format.name)
    return np.frombuffer(p, dt).reshape(p.height, p.line_size // dt.itemsize)[:, : p.width]


def decode(container, reel: Reel, start: int, stop: int):
    """Frames start..stop-1 of the reel (by PTS index) as (pts, Y plane), in order: seek to
    the keyframe at or before the first, decode up to the last, keep exactly those PTS."""
    import av

    v = container.streams.video[0]
    want = reel.pts[start:stop]
    wanted, got = set(want), {}
    container.seek(want[0], stream=v, backward=True, any_frame=False)
    try:
        for frame in container.decode(v):
            if frame.pts in wanted:
                got[frame.pts] = plane(frame, 0).copy()
            if frame.pts is not None and frame.pts >= want[-1]:
                break
    except av.FFmpegError as e:
        raise ReelError(f"cannot decode frames {start}..{stop - 1}: {e}") from None
    missing = [p for p in want if p not in got]
    if missing:
        raise ReelError(
            f"frames {start}..{stop - 1}: {len(missing)} did not decode (first at PTS {missing[0]})"
        )
    return [(p, got[p]) for p in want]


def lightness(y: np.ndarray, full_range: bool) -> torch.Tensor:
    """Y' codes (H, W; uint16 holds 10-bit ones) -> L* (H, W): Y' read as an sRGB-encoded
    grey, as a scan's grey is."""
    k = 4.0 if y.dtype == np.uint16 else 1.0  # 10-bit codes are 8-bit ones times 4
    g = torch.from_numpy(y.astype(np.float32))
    g = g / (1023.0 if k == 4 else 255.0) if full_range else (g - 16.0 * k) / (219.0 * k)
    return gray_to_lightness(g.clamp(0.0, 1.0))


def _subsample(c: np.ndarray, sy: int, sx: int) -> np.ndarray:
    h, w = c.shape
    c = np.pad(c, ((0, (-h) % sy), (0, (-w) % sx)), mode="edge")
    return c.reshape(c.shape[0] // sy, sy, c.shape[1] // sx, sx).mean(axis=(1, 3))


def chroma(L: torch.Tensor, ab: torch.Tensor, reel: Reel, pix_fmt: str) -> tuple[np.ndarray, np.ndarray]:
    """L* (H, W) and a*b* (2, h, w) -> the Cb and Cr planes of `pix_fmt` (uint8, or uint16
    for 10-bit)."""
    rgb = recombine(L, ab).astype(np.float32) / 255.0
    kr, kb = MATRICES[reel.colorspace]
    y = kr * rgb[..., 0] + (1 - kr - kb) * rgb[..., 1] + kb * rgb[..., 2]
    cb = (rgb[..., 2] - y) / (2 * (1 - kb))
    cr = (rgb[..., 0] - y) / (2 * (1 - kr))
    sy, sx = {"yuv420p": (2, 2), "yuv422p": (1, 2), "yuv444p": (1, 1)}[pix_fmt.replace("10le", "")]
    k, top = (4.0, 1023) if pix_fmt.endswith("10le") else (1.0, 255)
    scale = top if reel.full_range else 224.0 * k
    return tuple(
        np.clip(np.round(128.0 * k + scale * _subsample(c, sy, sx)), 0, top).astype(_dtype(pix_fmt))
        for c in (cb, cr)
    )


def make_frame(y: np.ndarray, cb: np.ndarray, cr: np.ndarray, pix_fmt: str, pts: int, time_base):
    import av

    h, w = y.shape
    frame = av.VideoFrame(w, h, pix_fmt)
    dt = _dtype(pix_fmt)
    for i, data in enumerate((y, cb, cr)):
        p = frame.planes[i]
        rows = np.zeros((p.height, p.line_size // dt.itemsize), dt)
        rows[: data.shape[0], : data.shape[1]] = data
        p.update(rows.tobytes())
    frame.pts = pts
    frame.time_base = time_base
    return frame
