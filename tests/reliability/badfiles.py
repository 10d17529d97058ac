"""Real files for every bad or awkward input an archive has sent us, built from a committed
sample photograph. Each case says what must happen: a correct output, or a failed row whose
reason starts with the given text."""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..conftest import sample


@dataclass
class Case:
    id: str
    uri: str
    expect: str  # "done" or "failed"
    reason: str = ""  # failed: the reason starts with this
    size: tuple[int, int] | None = None  # done: the output's (width, height)
    bit_depth: int = 8


def _source() -> Image.Image:
    im = Image.open(sample("chelsea.jpg")).convert("L")
    return im.resize((im.width // 2, im.height // 2))


def _bytes(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _png_bomb(w: int, h: int) -> bytes:
    """A valid PNG header that claims w x h, with a tiny IDAT: decoding it would need 10 GB."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def make_bad_inputs(folder: Path) -> list[Case]:
    folder.mkdir(parents=True, exist_ok=True)
    src = _source()
    w, h = src.size
    rng = np.random.default_rng(0)
    jpeg, png = _bytes(src, "JPEG", quality=90), _bytes(src, "PNG")
    tiff = _bytes(src, "TIFF")
    files: dict[str, bytes] = {
        "empty.jpg": b"",
        "truncated.jpg": jpeg[: len(jpeg) // 3],
        "truncated.png": png[: len(png) // 3],
        "truncated.tif": tiff[: len(tiff) // 3],
        "random.jpg": rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "error_page.jpg": b"<!DOCTYPE html>\n<html><head><title>503</title></head><body>Service Unavailable</body></html>\n",
        "document.pdf": b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n",
        "bomb.png": _png_bomb(100_000, 100_000),
        "one_pixel.png": _bytes(Image.new("L", (1, 1), 128), "PNG"),
        "sixteen_bit.tif": _bytes(
            Image.fromarray((np.asarray(src, np.uint16) * 257).astype(np.uint16)), "TIFF"
        ),
        "cmyk.jpg": _bytes(src.convert("CMYK"), "JPEG", quality=90),
        "grey_alpha.png": _bytes(Image.merge("LA", (src, Image.new("L", src.size, 200))), "PNG"),
    }
    pal = src.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    files["palette_transparent.png"] = _bytes(pal, "PNG", transparency=0)
    frames = [src, src.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=200, loop=0)
    files["animated.gif"] = buf.getvalue()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    files["exif_rotated.jpg"] = _bytes(src, "JPEG", quality=90, exif=exif.tobytes())
    files["unreadable.jpg"] = jpeg
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / "unreadable.jpg").chmod(0o000)

    def p(name: str) -> str:
        return str(folder / name)

    return [
        Case("empty", p("empty.jpg"), "failed", "empty file (0 bytes)"),
        Case("truncated_jpeg", p("truncated.jpg"), "failed", "truncated or corrupt JPEG data"),
        Case("truncated_png", p("truncated.png"), "failed", "truncated or corrupt PNG data"),
        Case("truncated_tiff", p("truncated.tif"), "failed", "truncated or corrupt TIFF data"),
        Case("random_bytes", p("random.jpg"), "failed", "not a recognised image format ("),
        Case("html_error_page", p("error_page.jpg"), "failed", "an HTML/XML page, not an image"),
        Case("pdf", p("document.pdf"), "failed", "a PDF document, not an image"),
        Case(
            "decompression_bomb",
            p("bomb.png"),
            "failed",
            "image is 100000x100000 = 10000.0 Mpx, above the 250 Mpx limit",
        ),
        Case("missing_path", p("no_such_scan.jpg"), "failed", "input not found: "),
        Case("one_pixel", p("one_pixel.png"), "done", size=(1, 1)),
        Case("sixteen_bit_tiff", p("sixteen_bit.tif"), "done", size=(w, h), bit_depth=16),
        Case("cmyk_jpeg", p("cmyk.jpg"), "done", size=(w, h)),
        Case("palette_transparent", p("palette_transparent.png"), "done", size=(w, h)),
        Case("animated_gif", p("animated.gif"), "done", size=(w, h)),
        Case("grey_alpha", p("grey_alpha.png"), "done", size=(w, h)),
        Case("exif_rotated", p("exif_rotated.jpg"), "done", size=(h, w)),
        # root reads any file, so as root this is an ordinary scan; see test_unreadable_input_as_a_user
        Case("unreadable", p("unreadable.jpg"), "done", size=(w, h)),
    ]
