"""Web copies made beside each output, for IIIF viewers and the published manifest.

A viewer without an image service loads whatever file a manifest names, whole: browsers
cannot decode TIFF, a 24-megapixel PNG is slow to open, and a local or s3:// original is not
reachable from a web page at all. So each output gets small JPEGs that any browser shows:

    OUT/thumbs/NAME.jpg     the colorized image, at most THUMB_SIDE pixels on its long side
    OUT/web/NAME.jpg        the colorized image, at most WEB_SIDE, when the output is TIFF
                            or 16-bit (the archival file stays in OUT/images as it was)
    OUT/originals/NAME.jpg  the scan as grey, at most WEB_SIDE, when its own URI is not
                            http(s) (a local path or s3://)

The grey copy is made from the colorized pixels' lightness, which is the scan's own L* (the
recombination keeps it), so that every finish path makes it the same way without reading
the scan again; a toned print (sepia) therefore shows as neutral grey. The colorized copies
carry the same AI label in XMP as the output.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
from PIL import Image

from archive_colorize.core.formats import ORIGINALS, THUMB_SIDE, THUMBS, WEB, WEB_SIDE, bounded
from archive_colorize.core.uripolicy import is_http
from archive_colorize.imaging.images import encode_image
from archive_colorize.imaging.provenance import Provenance


def needs_web_body(fmt: str, rgb: np.ndarray) -> bool:
    return fmt == "tiff" or rgb.dtype == np.uint16


def _shrunk(rgb: np.ndarray, side: int) -> Image.Image:
    if rgb.dtype == np.uint16:
        rgb = ((rgb.astype(np.uint32) + 128) // 257).astype(np.uint8)
    im = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    size = bounded(*im.size, side)
    return im if size == im.size else im.resize(size, Image.Resampling.LANCZOS)


_TO_LINEAR = np.where(
    (v := np.arange(256) / 255.0) <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4
).astype(np.float32)


def grey_of(im: Image.Image) -> Image.Image:
    """The grey image with the same lightness: relative luminance in linear light, back to
    sRGB (a plain "L" conversion mixes gamma-encoded values and darkens saturated colour)."""
    lin = _TO_LINEAR[np.asarray(im)]
    y = lin @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    srgb = np.where(y <= 0.0031308, 12.92 * y, 1.055 * np.power(y, 1 / 2.4) - 0.055)
    return Image.fromarray(np.clip(np.rint(srgb * 255), 0, 255).astype(np.uint8), "L")


def _colour_jpeg(im: Image.Image, provenance: Provenance) -> bytes:
    """A colorized copy says so, as the output does: the same encoder, XMP and Software."""
    made = hashlib.blake2b(im.tobytes(), digest_size=16).hexdigest()
    return encode_image(
        np.asarray(im), "jpeg", xmp=provenance.xmp(None, made), software=provenance.software, quality=85
    )


def _grey_jpeg(im: Image.Image) -> bytes:
    out = io.BytesIO()
    im.save(out, format="JPEG", quality=85)
    return out.getvalue()


def web_copies(rgb: np.ndarray, fmt: str, provenance: Provenance, source_uri: str) -> dict[str, bytes]:
    """{folder: JPEG bytes} for one output's `rgb` (H, W, 3, uint8 or uint16)."""
    h, w = rgb.shape[:2]
    body, original = needs_web_body(fmt, rgb), not is_http(source_uri)
    big = _shrunk(rgb, WEB_SIDE if body or original else THUMB_SIDE)
    size = bounded(w, h, THUMB_SIDE)
    thumb = big if big.size == size else big.resize(size, Image.Resampling.LANCZOS)
    copies = {THUMBS: _colour_jpeg(thumb, provenance)}
    if body:
        copies[WEB] = _colour_jpeg(big, provenance)
    if original:
        copies[ORIGINALS] = _grey_jpeg(grey_of(big))
    return copies
