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


# The web copies beside each output (imaging/web.py makes them, sinks/iiif.py names them):
# OUT/<folder>/<output stem>.jpg, the long side bounded
THUMB_SIDE = 256
WEB_SIDE = 4096
THUMBS, WEB, ORIGINALS = "thumbs", "web", "originals"
WEB_FOLDERS = (THUMBS, WEB, ORIGINALS)


def web_name(name: str) -> str:
    """The web copies' file name for an output named `name` (its stem, .jpg)."""
    return name.rsplit(".", 1)[0] + ".jpg"


def bounded(width: int, height: int, side: int) -> tuple[int, int]:
    """A copy's size: the long side at most `side`, the aspect kept (so that the manifest
    says the sizes without opening the files)."""
    if max(width, height) <= side:
        return width, height
    scale = side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


# Film reels: what `manifest build` takes for a reel, and how a row is known for one (its
# `kind` column, else its file name). A reel is a row like a scan; its work is per shot.
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".avi", ".mxf", ".webm")
KINDS = ("image", "video")


def kind_of(uri: str, kind: str | None = None) -> str:
    if kind:
        return kind
    path = uri.split("?", 1)[0].split("#", 1)[0].lower()
    return "video" if path.endswith(VIDEO_SUFFIXES) else "image"
