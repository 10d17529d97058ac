"""What a weights file says of itself, read without torch: its header and its sha256.

`submit` and `run --dry-run` only need to know which weights a run would use (the sha256
is part of the job's identity), so they read the safetensors header by hand: 8 bytes of
length, then JSON. Loading, verifying and building the model is weights.py's work.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path

from archive_colorize.errors import WeightsError

FORMAT = "archive-colorize-weights"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("format", "format_version", "config", "categories", "lab", "storage", "content_sha256")
JSON_KEYS = (
    "config",
    "categories",
    "lab",
    "preprocessing",
    "recipe",
    "data",
    "metrics",
    "training",
    "calibration",
)
DEFAULT_WEIGHTS = (
    Path(__file__).parents[1] / "weights" / "default.safetensors"
)  # package data, archive_colorize/weights/
MAX_HEADER = 100 * 2**20  # safetensors' own limit


@dataclass
class WeightsHeader:
    source: str  # as given: a path or a URL
    sha256: str  # of the whole file
    metadata: dict  # the archive-colorize header, JSON values parsed


def default_weights() -> Path:
    if not DEFAULT_WEIGHTS.is_file():
        raise WeightsError(
            "no trained weights are installed with this copy of archive-colorize",
            hint="pass --weights PATH to a .safetensors file (see README, 'Weights')",
        )
    return DEFAULT_WEIGHTS


def read_header(source: str | None, storage_options: dict | None = None) -> WeightsHeader:
    from archive_colorize.core.storage import read_bytes, resolve

    source = str(default_weights() if source is None else source)
    try:
        fs, path = resolve(source, storage_options)
        blob = read_bytes(fs, path)
    except (FileNotFoundError, IsADirectoryError):
        raise WeightsError(f"weights file not found: {source}") from None
    try:
        (n,) = struct.unpack("<Q", blob[:8])
        if n > min(MAX_HEADER, len(blob) - 8):
            raise ValueError("header length out of range")
        raw = json.loads(blob[8 : 8 + n]).get("__metadata__") or {}
    except (struct.error, ValueError) as e:
        raise WeightsError(
            f"{source} is not a readable safetensors weights file (truncated or corrupt?): {e}"
        ) from None
    return WeightsHeader(source, hashlib.sha256(blob).hexdigest(), parse_metadata(raw, source))


def parse_metadata(raw: dict, source) -> dict:
    """A safetensors `__metadata__` (all strings) -> the checked, parsed header."""
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if raw.get("format") != FORMAT or missing:
        what = (
            f"missing header key(s) {', '.join(missing)}" if missing else f"format is {raw.get('format')!r}"
        )
        raise WeightsError(f"{source} is not an archive-colorize weights file ({what})")
    try:
        meta = {k: (json.loads(v) if k in JSON_KEYS else v) for k, v in raw.items()}
        meta["format_version"] = int(meta["format_version"])
    except (ValueError, TypeError) as e:
        raise WeightsError(f"{source}: unreadable header ({e})") from None
    if meta["format_version"] > FORMAT_VERSION:
        raise WeightsError(
            f"{source} has weights format version {meta['format_version']}; this archive-colorize reads up to {FORMAT_VERSION}",
            hint="upgrade archive-colorize",
        )
    return meta
