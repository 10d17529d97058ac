"""The full-resolution steps as they were before the parallel strips (issue 13), kept so
that benchmarks/scan.py measures before and now side by side in one run. Not used by the
product."""

import io
import struct
import zlib

import numpy as np
import torch
from PIL import Image

from archive_colorize.lab import lab_to_rgb_keep_lightness
from archive_colorize.render import STRIP_ROWS, _interp_matrix


def recombine_before(lightness: torch.Tensor, ab: torch.Tensor, bit_depth: int = 8, strip_rows: int = STRIP_ROWS) -> np.ndarray:
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
        rgb = lab_to_rgb_keep_lightness(lab)[0].permute(1, 2, 0)
        out[y0:y1] = (rgb * maxval).round_().numpy().astype(out.dtype)
    return out


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def encode_png_before(rgb: np.ndarray, exif: Image.Exif, xmp: bytes | None) -> bytes:
    """PNG as it was encoded before archive_colorize/png.py: Pillow at zlib level 3 (8-bit),
    OpenCV plus inserted eXIf/iTXt chunks (16-bit)."""
    import cv2

    if rgb.dtype == np.uint16:
        ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
        png = buf.tobytes()
        extra = b"".join(_chunk(k, v) for k, v in ((b"eXIf", exif.tobytes()[6:]), (b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + xmp if xmp else None)) if v)
        return png[:33] + extra + png[33:]
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb), "RGB").save(out, format="PNG", exif=exif.tobytes(), compress_level=3)
    return out.getvalue()
