"""The output formats, in one table that decoding, encoding, signing and IIIF all read,
and the file suffixes taken for images when a folder is listed."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Format:
    name: str  # as --format takes it
    extension: str  # of the files written
    mime: str  # also what C2PA signs it as
    sixteen_bit: bool  # keeps a 16-bit scan at 16 bits


FORMAT_TABLE = (
    Format("jpeg", "jpg", "image/jpeg", False),
    Format("png", "png", "image/png", True),
    Format("tiff", "tif", "image/tiff", True),
    Format("webp", "webp", "image/webp", False),
)
BY_NAME = {f.name: f for f in FORMAT_TABLE}
FORMATS = {f.name: f.extension for f in FORMAT_TABLE}  # --format -> file extension
SIXTEEN_BIT_FORMATS = tuple(f.name for f in FORMAT_TABLE if f.sixteen_bit)
MIME_BY_EXTENSION = {f.extension: f.mime for f in FORMAT_TABLE}
# what a folder or prefix listing takes as scans (more than we write: archives keep BMP, GIF, JPEG 2000)
# Pillow modes that hold no colour: a training image in one of these is grey, whatever
# colour filter it would pass after conversion to RGB (LA: grey with alpha)
GRAY_MODES = ("L", "1", "I;16", "I", "LA")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp", ".gif", ".jp2")
