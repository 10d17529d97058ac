"""Decode training images in worker threads: numpy and Pillow only.

Kept free of torch, so it could equally run in a spawned process; the caller
turns the uint8 arrays into one device tensor.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from archive_colorize.core.formats import GRAY_MODES


def decode_chunk(blobs: list[bytes], side: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (rgb uint8 (n, side, side, 3), decoded ok (n,), stored as grayscale (n,)).

    Images of another size are resized to side x side here (Pillow's bilinear filter, which
    widens its support when shrinking, so a downscale is antialiased like the streaming path)."""
    n = len(blobs)
    out = np.zeros((n, side, side, 3), np.uint8)
    ok = np.zeros(n, bool)
    gray = np.zeros(n, bool)
    for i, data in enumerate(blobs):
        try:
            im = Image.open(io.BytesIO(bytes(data)))
            gray[i] = im.mode in GRAY_MODES
            im = im.convert("RGB")
            if im.size != (side, side):
                im = im.resize((side, side), Image.BILINEAR)
            out[i] = np.asarray(im)
            ok[i] = True
        except Exception:  # an undecodable image is left out and counted, as the filter would
            pass
    return out, ok, gray


def image_side(data: bytes, scale: int) -> int:
    """The resident side: a square image's own side up to `scale`, else `scale`."""
    w, h = Image.open(io.BytesIO(bytes(data))).size
    return w if w == h and w <= scale else scale
