"""Decode any archive scan to full-resolution L*, and encode the colour result.

Decode: EXIF orientation applied; first page/frame only; 1/8/16-bit grayscale, palette,
alpha (composited over white, as the print would be seen), CMYK and RGB (toned or sepia
prints: only their luminance is used). A pixel limit is checked from the header, before
any pixel is decoded, so a decompression bomb costs nothing.

Encode: JPEG, PNG, TIFF, WebP; 16-bit inputs give 16-bit PNG/TIFF; EXIF and XMP are kept.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from archive_colorize.errors import ImageError
from archive_colorize.core.defaults import DEFAULT_MAX_PIXELS
from archive_colorize.core.formats import FORMATS, SIXTEEN_BIT_FORMATS
from archive_colorize.imaging.lab import gray_to_lightness, luminance_to_lightness, srgb_to_linear

# We enforce our own, configurable limit before decoding; Pillow's global one would raise
# a different error (or only warn) at a size we did not choose.
Image.MAX_IMAGE_PIXELS = None


# EXIF tags that archives rely on, kept in every format that can hold them.
EXIF_ORIENTATION = 0x0112
EXIF_SOFTWARE = 0x0131
ARCHIVE_TAGS = {0x010E: "ImageDescription", 0x013B: "Artist", 0x8298: "Copyright", 0x0132: "DateTime"}
# What a source's IFD0 may pass on: descriptive tags only. A TIFF's IFD0 is also its file
# structure (sizes, strip offsets, compression) and holds its XMP (0x02BC), IPTC (0x83BB),
# Photoshop (0x8649) and ICC (0x8773) blocks: copied into EXIF they would describe another
# file, and a second DigitalSourceType would ride along in the XMP one.
DESCRIPTIVE_TAGS = (
    0x010D, 0x010E, 0x010F, 0x0110, 0x0112, 0x011A, 0x011B, 0x011D, 0x0128, 0x0131, 0x0132,
    0x013B, 0x013C, 0x8298,
)  # fmt: skip
EXIF_IFD, GPS_IFD = 0x8769, 0x8825
_NOT_PASSED_ON = (0x927C, 0xA005)  # MakerNote (vendor binary), the Interoperability IFD's pointer

_Y_WEIGHTS = torch.tensor([0.2126729, 0.7151522, 0.0721750])  # sRGB -> relative luminance Y
_LUT8 = gray_to_lightness(torch.arange(256, dtype=torch.float64) / 255).float()
_LUT16 = gray_to_lightness(torch.arange(65536, dtype=torch.float64) / 65535).float()
_LIN8 = srgb_to_linear(torch.arange(256, dtype=torch.float64) / 255).float()


@dataclass
class DecodedImage:
    lightness: torch.Tensor  # (H, W) float32 L* in [0, 100], full resolution, never resampled
    bit_depth: int  # 8 or 16
    mode: str  # the source's Pillow mode, for the record
    format: str | None
    exif: Image.Exif | None
    xmp: bytes | None

    @property
    def height(self) -> int:
        return int(self.lightness.shape[0])

    @property
    def width(self) -> int:
        return int(self.lightness.shape[1])


def _sniff(data: bytes) -> str:
    head = data[:512].lstrip().lower()
    if head.startswith(b"%pdf"):
        return "a PDF document, not an image"
    if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")):
        return "an HTML/XML page, not an image (an error page saved under an image name?)"
    # what the file looks like, never its bytes: the first bytes of /etc/shadow once went into
    # results.parquet and the report
    sample = data[:4096]
    if sample and all(32 <= b < 127 or b in (9, 10, 13) for b in sample):
        return "text, not an image"
    return f"not a recognised image format ({len(data)} bytes of unknown binary data)"


def _composite_on_white(im: Image.Image) -> Image.Image:
    base_mode = "L" if im.mode in ("LA", "La") else "RGB"
    im = im.convert("LA" if base_mode == "L" else "RGBA")
    bg = Image.new(im.mode, im.size, (255, 255) if base_mode == "L" else (255, 255, 255, 255))
    return Image.alpha_composite(bg.convert("RGBA"), im.convert("RGBA")).convert(base_mode)


DECODE_ROWS = 512  # rows converted at a time: a 100 Mpx scan never needs an int64 copy of itself


def map_strips(fn, starts, threads: int | None = None) -> None:
    """fn(start) for every strip start, in parallel on `threads` threads (default: torch's,
    i.e. the CPUs this task owns), each strip on one torch thread: it scales, and no strip's
    numbers depend on how many threads there are."""
    threads = threads or torch.get_num_threads()
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if threads == 1 or len(starts) <= 1:
            for y in starts:
                fn(y)
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(fn, starts))
    finally:
        torch.set_num_threads(before)


def _by_rows(shape: tuple[int, int], fill) -> torch.Tensor:
    """A (H, W) float32 result filled a strip of rows at a time (map_strips)."""
    out = torch.empty(shape, dtype=torch.float32)
    map_strips(lambda y: fill(y, out[y : y + DECODE_ROWS]), range(0, shape[0], DECODE_ROWS))
    return out


def _lut_rows(arr: np.ndarray, lut: torch.Tensor) -> torch.Tensor:
    """out[y, x] = lut[arr[y, x]]. int32 indices, a strip at a time: int64 ones would be 4x
    the size of a 16-bit scan."""

    def fill(y, dst):
        idx = torch.from_numpy(arr[y : y + DECODE_ROWS].astype(np.int32)).view(-1)
        torch.index_select(lut, 0, idx, out=dst.view(-1))

    return _by_rows(arr.shape[:2], fill)


def _luminance_rows(rgb: np.ndarray) -> torch.Tensor:
    def fill(y, dst):
        idx = torch.from_numpy(rgb[y : y + DECODE_ROWS].astype(np.int32))
        strip = _LIN8[idx]  # (rows, W, 3) linear RGB
        dst.copy_(luminance_to_lightness((strip * _Y_WEIGHTS).sum(-1)))

    return _by_rows(rgb.shape[:2], fill)


def _lightness_from_image(im: Image.Image) -> tuple[torch.Tensor, int]:
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(im)
        if mode == "I" and (arr.min() < 0 or arr.max() > 65535):
            raise ImageError(f"32-bit integer pixels outside 0..65535 (mode {mode}) are not supported")
        return _lut_rows(arr, _LUT16), 16
    if mode == "F":
        raise ImageError("32-bit float images are not supported; export the scan as 8- or 16-bit")
    if mode in ("P", "PA"):
        im = im.convert("RGBA")
    if im.mode in ("LA", "La", "RGBA", "RGBa"):
        im = _composite_on_white(im)
    if im.mode == "1":
        im = im.convert("L")
    if im.mode == "L":
        return _lut_rows(np.asarray(im), _LUT8), 8
    if im.mode != "RGB":  # CMYK, YCbCr, LAB, HSV: let Pillow (and its CMS) make sRGB
        im = im.convert("RGB")
    return _luminance_rows(np.asarray(im)), 8


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Bytes -> DecodedImage, or ImageError with a one-line reason."""
    if not data:
        raise ImageError("empty file (0 bytes)")
    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(_sniff(data)) from None
    except Exception as e:  # Pillow raises many types for broken headers
        raise ImageError(f"unreadable image header: {e}") from None
    w, h = im.size
    if w < 1 or h < 1:
        raise ImageError(f"image has no pixels ({w}x{h})")
    if w * h > max_pixels:
        raise ImageError(
            f"image is {w}x{h} = {w * h / 1e6:.1f} Mpx, above the {max_pixels / 1e6:.0f} Mpx limit "
            "(possible decompression bomb; raise --max-pixels to allow it)"
        )
    fmt = im.format
    try:
        im.seek(0)  # multi-page TIFF / animated GIF: the first page is the scan
        exif = im.getexif()
        xmp = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp")
        im = ImageOps.exif_transpose(im)  # also decodes the pixels
        im.load()
        lightness, depth = _lightness_from_image(im)
    except ImageError:
        raise
    except Exception as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ImageError(f"truncated or corrupt {fmt or 'image'} data: {reason}") from None
    exif = descriptive_exif(exif) if exif else exif
    if exif is not None and EXIF_ORIENTATION in exif:
        exif[EXIF_ORIENTATION] = 1  # the pixels are upright now
    if isinstance(xmp, str):
        xmp = xmp.encode()
    return DecodedImage(lightness.float().contiguous(), depth, im.mode, fmt, exif if exif else None, xmp)


def descriptive_exif(exif: Image.Exif) -> Image.Exif:
    """The source's descriptive EXIF (DESCRIPTIVE_TAGS, the Exif and GPS sub-IFDs) in a
    new block, whatever the source format."""
    out = Image.Exif()
    for tag in DESCRIPTIVE_TAGS:
        if tag in exif:
            out[tag] = exif[tag]
    for ifd in (EXIF_IFD, GPS_IFD):
        try:
            found = exif.get_ifd(ifd)
        except Exception:  # a broken sub-IFD pointer: the rest is still worth keeping
            found = {}
        if found:
            out.get_ifd(ifd).update({k: v for k, v in found.items() if k not in _NOT_PASSED_ON})
    return out


def output_bit_depth(decoded_depth: int, fmt: str) -> int:
    return 16 if decoded_depth == 16 and fmt in SIXTEEN_BIT_FORMATS else 8


def encode_image(
    rgb: np.ndarray,
    fmt: str,
    *,
    exif: Image.Exif | None = None,
    xmp: bytes | None = None,
    software: str = "archive-colorize",
    quality: int = 92,
) -> bytes:
    """(H, W, 3) uint8 or uint16 sRGB -> file bytes in `fmt`."""
    if fmt not in FORMATS:
        raise ImageError(f"unsupported output format {fmt!r}; choose one of {', '.join(FORMATS)}")
    exif = Image.Exif() if exif is None else exif
    exif[EXIF_SOFTWARE] = software  # provenance: this file is a machine colorization
    exif_bytes = exif.tobytes()
    if fmt == "png":
        from archive_colorize.imaging.png import encode_png

        # strips deflated in parallel on the CPUs this task owns (png.py; docs/performance.md)
        return encode_png(rgb, exif_bytes, xmp, threads=torch.get_num_threads())
    if rgb.dtype == np.uint16:
        if fmt == "tiff":
            import tifffile

            tags = [
                (tag, "s", 0, str(exif[tag]), True) for tag in ARCHIVE_TAGS if tag in exif and tag != 0x010E
            ]
            if xmp:
                tags.append((700, "B", len(xmp), xmp, True))
            out = io.BytesIO()
            tifffile.imwrite(
                out,
                rgb,
                photometric="rgb",
                compression="zlib",
                software=software,
                description=str(exif.get(0x010E, "")) or None,
                metadata=None,
                extratags=tags,
            )
            sub = exif.get_ifd(EXIF_IFD)
            return with_exif_ifd(out.getvalue(), sub) if sub else out.getvalue()
        rgb = (rgb // 257).astype(np.uint8)  # JPEG/WebP cannot hold 16 bits
    im = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    out = io.BytesIO()
    kwargs: dict = {"exif": exif_bytes}
    if fmt == "jpeg":
        kwargs.update(quality=quality, subsampling=0)
    elif fmt == "webp":
        kwargs.update(quality=quality)
    elif fmt == "tiff":
        # Pillow's TIFF writer takes the IFD0 tags (description, artist, ...) from tiffinfo, not exif=
        info = {tag: exif[tag] for tag in (*DESCRIPTIVE_TAGS, EXIF_SOFTWARE) if tag in exif}
        kwargs.update(compression="tiff_deflate", tiffinfo=info)
    if xmp:
        if fmt == "tiff":
            kwargs["tiffinfo"][700] = xmp
        else:
            kwargs["xmp"] = xmp
    im.save(out, format=fmt.upper(), **kwargs)
    if fmt == "tiff" and exif.get_ifd(EXIF_IFD):
        return with_exif_ifd(out.getvalue(), exif.get_ifd(EXIF_IFD))
    return out.getvalue()


def with_exif_ifd(tiff: bytes, tags: dict) -> bytes:
    """A TIFF (as Pillow writes it: little-endian, one IFD0) with an Exif sub-IFD added:
    DateTimeOriginal and the rest. Pillow's libtiff writer, which the deflate compression
    needs, cannot write a sub-IFD; so the Exif IFD and a copy of IFD0 that points to it
    (tag 34665) are appended, and the header points to the copy. Nothing else moves."""
    import struct

    from PIL import TiffImagePlugin

    if tiff[:4] != b"II*\x00":
        return tiff  # not the layout this was written for: leave the file as it is
    (ifd0,) = struct.unpack_from("<I", tiff, 4)
    (n,) = struct.unpack_from("<H", tiff, ifd0)
    entries = [tiff[ifd0 + 2 + 12 * i : ifd0 + 14 + 12 * i] for i in range(n)]
    (next_ifd,) = struct.unpack_from("<I", tiff, ifd0 + 2 + 12 * n)
    sub = TiffImagePlugin.ImageFileDirectory_v2(group=EXIF_IFD)  # the Exif tags' own types
    for tag, value in tags.items():
        sub[tag] = value
    at = len(tiff) + len(tiff) % 2  # IFDs start on a word boundary
    block = sub.tobytes(at)
    at0 = at + len(block) + len(block) % 2
    entries = [e for e in entries if struct.unpack_from("<H", e)[0] != EXIF_IFD]
    entries.append(struct.pack("<HHII", EXIF_IFD, 4, 1, at))
    entries.sort(key=lambda e: struct.unpack_from("<H", e)[0])
    new0 = struct.pack("<H", len(entries)) + b"".join(entries) + struct.pack("<I", next_ifd)
    out = bytearray(tiff)
    out += b"\x00" * (at - len(out)) + block
    out += b"\x00" * (at0 - len(out)) + new0
    struct.pack_into("<I", out, 4, at0)
    return bytes(out)


def working_copy(lightness: torch.Tensor, working_size: int) -> torch.Tensor:
    """(H, W) L* -> (1, 1, h, w) L*/100 with max(h, w) <= working_size."""
    h, w = lightness.shape
    scale = working_size / max(h, w)
    if scale >= 1:
        return (lightness / 100.0)[None, None]
    # Resample first, then scale: the division then touches the small copy, not a 400 MB one.
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    x = F.interpolate(lightness[None, None], size=size, mode="bilinear", align_corners=False, antialias=True)
    return x / 100.0
