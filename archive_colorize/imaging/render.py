"""From predicted chroma to the file: recombination at full resolution, and rendering.

The network only ever sees a working-size copy (long side <= working_size, never
upscaled); its a*b* is upsampled to full resolution and joined with the ORIGINAL L*, in
row strips so memory stays bounded on 100-megapixel scans. `render` is the one path from
chroma to bytes, for `colorize` and `run` alike.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch

from archive_colorize.errors import ImageError
from archive_colorize.imaging.images import DecodedImage, encode_image, map_strips, output_bit_depth
from archive_colorize.imaging.lab import fit_into_gamut, lab_to_linear_planes, linear_to_srgb_, outside_gamut
from archive_colorize.imaging.provenance import Provenance

# Rows per strip on the CPU: small enough that a strip's dozen temporaries stay in the
# cache (measured: docs/performance.md); a GPU takes strips sized to its free memory.
STRIP_ROWS = 32
# Mean a*b* chroma (CIE units) below which a result is effectively grey: the model added no
# colour, and we refuse to call that colorized.
MIN_MEAN_CHROMA = 0.5
# the payload of one JPEG APP1 segment (65,535 bytes less its length and XMP/EXIF header)
JPEG_SEGMENT_MAX = 65_000
# Bytes of device memory one output pixel needs while its strip is converted (the planes and
# temporaries of lab_to_srgb_planes, float32), with room to spare.
DEVICE_BYTES_PER_PIXEL = 96


def _taps(
    n_out: int, n_in: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For bilinear resampling n_in -> n_out (align_corners=False, edges clamped, as
    F.interpolate): each output position's two source indices and the second one's weight."""
    i = torch.arange(n_out, dtype=torch.float64)
    src = ((i + 0.5) * n_in / n_out - 0.5).clamp(0, n_in - 1)
    i0 = src.floor().long()
    i1 = (i0 + 1).clamp(max=n_in - 1)
    return i0.to(device), i1.to(device), (src - i0).float().to(device)


def _strip_rows_for(device: torch.device, width: int) -> int:
    if device.type != "cuda":
        return STRIP_ROWS
    free, _ = torch.cuda.mem_get_info(device)
    return max(STRIP_ROWS, int(free // 2 // (width * DEVICE_BYTES_PER_PIXEL)))


def recombine(
    lightness: torch.Tensor,
    ab: torch.Tensor,
    bit_depth: int = 8,
    strip_rows: int | None = None,
    threads: int | None = None,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Full-res L* (H, W) + low-res a*b* (2, h, w) -> (H, W, 3) sRGB uint8/uint16.

    L* is used exactly as decoded; only the chroma is resampled (bilinear: along columns
    once, then two source rows and a lerp per output row). The work runs in row strips on
    `device`, one torch function for the CPU and a GPU: on the CPU, strips run in parallel
    on `threads` threads (default: torch's, i.e. the CPUs this task owns), each strip on
    one torch thread, so the bytes are the same whatever the thread count; on a GPU, in
    strips sized to its free memory. Only the 8/16-bit result comes back to host memory."""
    device = torch.device(device or "cpu")
    H, W = lightness.shape
    h, w = ab.shape[1:]
    maxval = 65535 if bit_depth == 16 else 255
    out = np.empty((H, W, 3), dtype=np.uint16 if bit_depth == 16 else np.uint8)
    ab = ab.float().to(device)
    c0, c1, cw = _taps(W, w, device)
    ab_cols = torch.lerp(ab[:, :, c0], ab[:, :, c1], cw)  # (2, h, W): small, once per scan
    r0, r1, rw = _taps(H, h, device)
    strip_rows = strip_rows or _strip_rows_for(device, W)

    late: list = []  # out-of-gamut pixels, fitted once for the whole scan (per strip, the
    # bisection's hundreds of small operations cost more than the strip itself)

    def strip(y0: int) -> None:
        y1 = min(H, y0 + strip_rows)
        weight = rw[y0:y1, None]
        a = torch.lerp(ab_cols[0, r0[y0:y1]], ab_cols[0, r1[y0:y1]], weight)
        b = torch.lerp(ab_cols[1, r0[y0:y1]], ab_cols[1, r1[y0:y1]], weight)
        L = lightness[y0:y1].to(device, torch.float32, copy=True)  # the caller's L* may be a read-only buffer
        lin = lab_to_linear_planes(L, a, b)
        outside = outside_gamut(lin)
        if outside.any():
            ys, xs = outside.nonzero(as_tuple=True)
            late.append((ys + y0, xs, L[ys, xs], a[ys, xs], b[ys, xs]))
        out[y0:y1] = _store(linear_to_srgb_(lin))

    def _store(srgb: torch.Tensor) -> np.ndarray:
        q = srgb.mul_(maxval).round_()
        if device.type != "cpu":  # integers cross back: a third (8-bit) or half (16-bit) of the floats
            q = q.to(torch.uint8 if bit_depth == 8 else torch.int32).cpu()
        return q.movedim(0, -1).numpy()

    starts = range(0, H, strip_rows)
    if device.type != "cpu":
        for y0 in starts:
            strip(y0)
    else:
        map_strips(strip, starts, threads)
    if late:
        ys, xs, L, a, b = (torch.cat(p) for p in zip(*late))
        out[ys.cpu().numpy(), xs.cpu().numpy()] = _store(linear_to_srgb_(fit_into_gamut(L, a, b)))
    return out


def mean_chroma(ab: torch.Tensor) -> float:
    return float(ab.norm(dim=0).mean())


def colour(
    lightness: torch.Tensor, ab: torch.Tensor, bit_depth: int, device: torch.device | str | None = None
) -> np.ndarray:
    """Refuse a grey result, then recombine the chroma with the original L* (on `device`)."""
    chroma = mean_chroma(ab)
    if not math.isfinite(chroma) or not bool(torch.isfinite(ab).all()):
        # NaN compares false with everything: `chroma < 0.5` once let NaN weights write black images
        raise ImageError("the model produced non-finite colour (NaN or Inf); nothing written")
    if chroma < MIN_MEAN_CHROMA:
        raise ImageError(f"the model produced no colour (mean chroma {chroma:.2f}); nothing written")
    return recombine(lightness, ab, bit_depth, device=device)


def encode_result(
    rgb: np.ndarray,
    fmt: str,
    provenance: Provenance,
    exif=None,
    xmp: bytes | None = None,
    source: bytes | None = None,
    source_format: str | None = None,
    title: str = "",
    ingredient: str = "",
) -> bytes:
    """Encode with the original metadata and our XMP, and (with credentials) sign it with
    C2PA, the scan's `source` bytes as its ingredient (titled `ingredient`: the row)."""
    # the new XMP ids come from what was made (the pixels), so the same input and model
    # give the same bytes, whatever the output is named
    made = hashlib.blake2b(np.ascontiguousarray(rgb).data, digest_size=16).hexdigest()
    packet = provenance.xmp(xmp, made)
    if fmt == "jpeg" and len(packet) > JPEG_SEGMENT_MAX:
        # a JPEG APP1 segment holds 64 KB: the source's own XMP gives way, the label stays
        packet = provenance.xmp(None, made)
    if fmt == "jpeg" and exif is not None and len(exif.tobytes()) > JPEG_SEGMENT_MAX:
        exif = None  # the same for an EXIF block that cannot fit; Software is written anew
    blob = encode_image(rgb, fmt, exif=exif, xmp=packet, software=provenance.software)
    if provenance.c2pa is not None:
        from archive_colorize.imaging.c2pa_sign import sign

        blob = sign(blob, fmt, source, source_format, title, provenance.c2pa, ingredient)
    return blob


def render(decoded: DecodedImage, ab: torch.Tensor, fmt: str, provenance: Provenance, **where) -> bytes:
    """The one path from predicted chroma to file bytes, for `colorize` and `run` alike:
    `colour` then `encode_result` (a run on a GPU splits them between its stages). `where`:
    render_pixels' source, title and ingredient."""
    return render_pixels(decoded, ab, fmt, provenance, **where)[0]


def render_pixels(
    decoded: DecodedImage,
    ab: torch.Tensor,
    fmt: str,
    provenance: Provenance,
    source: bytes | None = None,
    title: str = "",
    ingredient: str = "",
) -> tuple[bytes, np.ndarray]:
    """`render`, and the pixels it encoded (for the web copies: imaging/web.py)."""
    rgb = colour(decoded.lightness, ab, output_bit_depth(decoded.bit_depth, fmt))
    blob = encode_result(
        rgb, fmt, provenance, decoded.exif, decoded.xmp, source, decoded.format, title, ingredient
    )
    return blob, rgb
