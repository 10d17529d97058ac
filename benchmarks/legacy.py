"""The full-resolution steps as they were before issue 13 (the parallel strips, the
select-free colour math, the threaded decode converters), kept so that benchmarks/scan.py
measures before and now side by side in one run. Not used by the product."""

import io
import struct
import zlib

import numpy as np
import torch
from PIL import Image

# the textbook, torch.where forms: still lab.py's own for lab_to_rgb (training, tests)
from archive_colorize.imaging.lab import _lab_to_linear as _lab_to_linear_before
from archive_colorize.imaging.lab import linear_to_srgb as linear_to_srgb_before
from archive_colorize.imaging.render import _taps

STRIP_ROWS = 256


def _interp_matrix(n_out: int, n_in: int, start: int = 0, stop: int | None = None) -> torch.Tensor:
    """Rows [start, stop) of the (n_out x n_in) bilinear matrix: the same weights as _taps."""
    stop = n_out if stop is None else stop
    i0, i1, w1 = (t[start:stop] for t in _taps(n_out, n_in))
    m = torch.zeros(stop - start, n_in)
    rows = torch.arange(stop - start)
    m.index_put_((rows, i0), 1 - w1, accumulate=True)
    m.index_put_((rows, i1), w1, accumulate=True)
    return m


def lab_to_rgb_keep_lightness_before(lab: torch.Tensor, steps: int = 10) -> torch.Tensor:
    """L*a*b* -> sRGB, pulling out-of-gamut chroma toward grey instead of clipping channels.

    Per-channel clipping changes L*, and the contract is that the archive's own luminance
    survives untouched. So for out-of-gamut pixels we bisect the largest chroma scale
    s in [0, 1] whose colour fits in sRGB; s = 0 (neutral grey) always fits.
    """
    lin = _lab_to_linear_before(lab)
    tol = 1e-6
    outside = ((lin < -tol) | (lin > 1 + tol)).any(dim=1)  # (N, H, W)
    if outside.any():
        # Bisect only the out-of-gamut pixels (often a few percent): the same arithmetic
        # per pixel, on a (1, 3, k, 1) gather instead of the whole image, 11 times over.
        sel = outside.nonzero(as_tuple=True)
        px = lab.permute(0, 2, 3, 1)[sel].T[None, :, :, None]  # (1, 3, k, 1)
        L, ab = px[:, :1], px[:, 1:]
        lo = torch.zeros_like(L)
        hi = torch.ones_like(L)
        for _ in range(steps):
            mid = (lo + hi) / 2
            trial = _lab_to_linear_before(torch.cat([L, ab * mid], dim=1))
            fits = ((trial >= -tol) & (trial <= 1 + tol)).all(dim=1, keepdim=True)
            lo = torch.where(fits, mid, lo)
            hi = torch.where(fits, hi, mid)
        fixed = _lab_to_linear_before(torch.cat([L, ab * lo], dim=1))  # (1, 3, k, 1)
        lin = lin.permute(0, 2, 3, 1).contiguous()
        lin[sel] = fixed[0, :, :, 0].T
        lin = lin.permute(0, 3, 1, 2)
    return linear_to_srgb_before(lin)


def recombine_before(
    lightness: torch.Tensor, ab: torch.Tensor, bit_depth: int = 8, strip_rows: int = STRIP_ROWS
) -> np.ndarray:
    """Sequential strips, torch's own threads inside each operation."""
    H, W = lightness.shape
    ab = ab.float().cpu()
    cols = _interp_matrix(W, ab.shape[2]).T
    maxval = 65535 if bit_depth == 16 else 255
    out = np.empty((H, W, 3), dtype=np.uint16 if bit_depth == 16 else np.uint8)
    for y0 in range(0, H, strip_rows):
        y1 = min(H, y0 + strip_rows)
        rows = _interp_matrix(H, ab.shape[1], y0, y1)
        ab_strip = torch.einsum("sh,chw,wx->csx", rows, ab, cols)
        lab = torch.cat([lightness[y0:y1][None].float(), ab_strip], dim=0)[None]
        rgb = lab_to_rgb_keep_lightness_before(lab)[0].permute(1, 2, 0)
        out[y0:y1] = (rgb * maxval).round_().numpy().astype(out.dtype)
    return out


def _chunk(kind: bytes, body: bytes) -> bytes:
    return (
        struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    )


def encode_png_before(rgb: np.ndarray, exif: Image.Exif, xmp: bytes | None) -> bytes:
    """PNG as it was encoded before archive_colorize/imaging/png.py: Pillow at zlib level 3 (8-bit),
    OpenCV plus inserted eXIf/iTXt chunks (16-bit)."""
    import cv2

    if rgb.dtype == np.uint16:
        ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
        png = buf.tobytes()
        extra = b"".join(
            _chunk(k, v)
            for k, v in (
                (b"eXIf", exif.tobytes()[6:]),
                (b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + xmp if xmp else None),
            )
            if v
        )
        return png[:33] + extra + png[33:]
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb), "RGB").save(
        out, format="PNG", exif=exif.tobytes(), compress_level=3
    )
    return out.getvalue()


DECODE_ROWS = 512


def lut_rows_before(arr: np.ndarray, lut: torch.Tensor) -> torch.Tensor:
    """images._lut_rows before the int32, threaded strips: int64 indices, one thread."""
    out = torch.empty(arr.shape[:2], dtype=torch.float32)
    for y in range(0, arr.shape[0], DECODE_ROWS):
        out[y : y + DECODE_ROWS] = lut[torch.from_numpy(arr[y : y + DECODE_ROWS].astype(np.int64))]
    return out


def luminance_rows_before(rgb: np.ndarray) -> torch.Tensor:
    from archive_colorize.imaging.images import _LIN8, _Y_WEIGHTS
    from archive_colorize.imaging.lab import luminance_to_lightness

    out = torch.empty(rgb.shape[:2], dtype=torch.float32)
    for y in range(0, rgb.shape[0], DECODE_ROWS):
        strip = _LIN8[torch.from_numpy(rgb[y : y + DECODE_ROWS].astype(np.int64))]
        out[y : y + DECODE_ROWS] = luminance_to_lightness((strip * _Y_WEIGHTS).sum(-1))
    return out


def use_decode_before() -> None:
    """Decode as before, for this process: the old row converters in images.py."""
    from archive_colorize.imaging import images

    images._lut_rows, images._luminance_rows = lut_rows_before, luminance_rows_before
