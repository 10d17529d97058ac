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

from .errors import WeightsError

FORMAT = "archive-colorize-weights"
DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "default.safetensors"
MAX_HEADER = 100 * 2**20  # safetensors' own limit


@dataclass
class WeightsHeader:
    source: str  # as given: a path or a URL
    sha256: str  # of the whole file
    metadata: dict  # the archive-colorize header, JSON values parsed


def default_weights() -> Path:
    if not DEFAULT_WEIGHTS.is_file():
        raise WeightsError("no trained weights are installed with this copy of archive-colorize",
                           hint="pass --weights PATH to a .safetensors file (see README, 'Weights')")
    return DEFAULT_WEIGHTS


def read_header(source: str | None, storage_options: dict | None = None) -> WeightsHeader:
    from .storage import read_bytes, resolve

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
        raise WeightsError(f"{source} is not a readable safetensors weights file (truncated or corrupt?): {e}") from None
    if raw.get("format") != FORMAT:
        raise WeightsError(f"{source} is not an archive-colorize weights file (format is {raw.get('format')!r})")
    meta = {}
    for k, v in raw.items():
        try:
            meta[k] = json.loads(v) if isinstance(v, str) and v[:1] in "[{" else v
        except ValueError:
            meta[k] = v
    return WeightsHeader(source, hashlib.sha256(blob).hexdigest(), meta)
