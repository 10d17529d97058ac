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

from archive_colorize.imaging.provenance import Provenance

THUMB_SIDE = 256
WEB_SIDE = 4096
THUMBS, WEB, ORIGINALS = "thumbs", "web", "originals"
WEB_FOLDERS = (THUMBS, WEB, ORIGINALS)


def web_name(name: str) -> str:
    """The web copies' file name for an output named `name` (its stem, .jpg)."""
    return name.rsplit(".", 1)[0] + ".jpg"


def needs_web_body(fmt: str, rgb: np.ndarray) -> bool:
    return fmt == "tiff" or rgb.dtype == np.uint16


def is_web_reachable(uri: str) -> bool:
    return uri.split("://", 1)[0].lower() in ("http", "https") if "://" in uri else False


def bounded(width: int, height: int, side: int) -> tuple[int, int]:
    """A copy's size: the long side at most `side`, the aspect kept (sinks/iiif.py says
    these sizes in the manifest without opening the files)."""
    if max(width, height) <= side:
        return width, height
    scale = side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


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


def _jpeg(im: Image.Image, provenance: Provenance | None) -> bytes:
    out = io.BytesIO()
    kwargs: dict = {"quality": 85}
    if provenance is not None:  # a colorized copy says so, as the output does
        made = hashlib.blake2b(im.tobytes(), digest_size=16).hexdigest()
        kwargs["xmp"] = provenance.xmp(None, made)
        exif = Image.Exif()
        exif[0x0131] = provenance.software
        kwargs["exif"] = exif.tobytes()
    im.save(out, format="JPEG", **kwargs)
    return out.getvalue()


def web_copies(
    rgb: np.ndarray, fmt: str, provenance: Provenance, original_reachable: bool
) -> dict[str, bytes]:
    """{folder: JPEG bytes} for one output's `rgb` (H, W, 3, uint8 or uint16)."""
    h, w = rgb.shape[:2]
    body, original = needs_web_body(fmt, rgb), not original_reachable
    big = _shrunk(rgb, WEB_SIDE if body or original else THUMB_SIDE)
    size = bounded(w, h, THUMB_SIDE)
    thumb = big if big.size == size else big.resize(size, Image.Resampling.LANCZOS)
    copies = {THUMBS: _jpeg(thumb, provenance)}
    if body:
        copies[WEB] = _jpeg(big, provenance)
    if original:
        copies[ORIGINALS] = _jpeg(grey_of(big), None)
    return copies
