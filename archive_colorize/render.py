"""From predicted chroma to the file: recombination at full resolution, and rendering.

The network only ever sees a working-size copy (long side <= working_size, never
upscaled); its a*b* is upsampled to full resolution and joined with the ORIGINAL L*, in
row strips so memory stays bounded on 100-megapixel scans. `render` is the one path from
chroma to bytes, for `colorize` and `run` alike.
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import ImageError
from .images import DecodedImage, encode_image, output_bit_depth
from .lab import lab_to_rgb_keep_lightness
from .provenance import Provenance

STRIP_ROWS = 256
# Mean a*b* chroma (CIE units) below which a result is effectively grey: the model added no
# colour, and we refuse to call that colorized.
MIN_MEAN_CHROMA = 0.5


def _interp_matrix(n_out: int, n_in: int, start: int = 0, stop: int | None = None) -> torch.Tensor:
    """Rows [start, stop) of the (n_out x n_in) bilinear matrix, align_corners=False, edges clamped:
    the same numbers as F.interpolate, but it can be built for one strip at a time."""
    stop = n_out if stop is None else stop
    i = torch.arange(start, stop, dtype=torch.float64)
    src = ((i + 0.5) * n_in / n_out - 0.5).clamp(0, n_in - 1)
    i0 = src.floor().long()
    i1 = (i0 + 1).clamp(max=n_in - 1)
    w1 = (src - i0).float()
    m = torch.zeros(stop - start, n_in)
    rows = torch.arange(stop - start)
    m.index_put_((rows, i0), 1 - w1, accumulate=True)
    m.index_put_((rows, i1), w1, accumulate=True)
    return m


def recombine(lightness: torch.Tensor, ab: torch.Tensor, bit_depth: int = 8, strip_rows: int = STRIP_ROWS,
              threads: int | None = None) -> np.ndarray:
    """Full-res L* (H, W) + low-res a*b* (2, h, w) -> (H, W, 3) sRGB uint8/uint16.

    L* is used exactly as decoded; only the chroma is resampled. Strips run on `threads`
    threads (default: torch's, i.e. the CPUs this task owns), each strip on one torch
    thread, so the bytes are the same whatever the thread count."""
    H, W = lightness.shape
    ab = ab.float().cpu()
    cols = _interp_matrix(W, ab.shape[2]).T  # (w, W)
    maxval = 65535 if bit_depth == 16 else 255
    out = np.empty((H, W, 3), dtype=np.uint16 if bit_depth == 16 else np.uint8)

    def strip(y0: int) -> None:
        y1 = min(H, y0 + strip_rows)
        rows = _interp_matrix(H, ab.shape[1], y0, y1)  # (strip, h)
        ab_strip = torch.einsum("sh,chw,wx->csx", rows, ab, cols)  # (2, strip, W)
        lab = torch.cat([lightness[y0:y1][None].float(), ab_strip], dim=0)[None]
        rgb = lab_to_rgb_keep_lightness(lab)[0].permute(1, 2, 0)
        out[y0:y1] = (rgb * maxval).round_().numpy().astype(out.dtype)

    threads = threads or torch.get_num_threads()
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # parallel over strips instead: it scales, and no strip's sums depend on threads
    try:
        if threads == 1 or H <= strip_rows:
            for y0 in range(0, H, strip_rows):
                strip(y0)
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(strip, range(0, H, strip_rows)))
    finally:
        torch.set_num_threads(before)
    return out


def mean_chroma(ab: torch.Tensor) -> float:
    return float(ab.norm(dim=0).mean())


def render(decoded: DecodedImage, ab: torch.Tensor, fmt: str, provenance: Provenance, source: bytes | None = None,
           title: str = "") -> bytes:
    """The one path from predicted chroma to file bytes, for `colorize` and `run` alike:
    refuse a grey result, recombine with the original L*, encode with the original metadata
    and our XMP, and (with credentials) sign it with C2PA, the scan's `source` bytes as its
    ingredient."""
    chroma = mean_chroma(ab)
    if chroma < MIN_MEAN_CHROMA:
        raise ImageError(f"the model produced no colour (mean chroma {chroma:.2f}); nothing written")
    rgb = recombine(decoded.lightness, ab, output_bit_depth(decoded.bit_depth, fmt))
    blob = encode_image(rgb, fmt, exif=decoded.exif, xmp=provenance.xmp(decoded.xmp), software=provenance.software)
    if provenance.c2pa is not None:
        from .c2pa_sign import sign

        blob = sign(blob, fmt, source, decoded.format, title, provenance.c2pa)
    return blob
