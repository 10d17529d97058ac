"""Helpers for the reliability suite: many small real scans, and running the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from ..conftest import ROOT, historical_files

WORKING = 64


def tiny_scans(folder: Path, n: int, size: tuple[int, int] = (64, 48), seed: int = 0) -> Path:
    """n small grayscale JPEGs cut from the shared historical scans, and their manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sources = [Image.open(f).convert("L") for f in historical_files()]
    ids, uris = [], []
    for i in range(n):
        src = sources[i % len(sources)]
        x = int(rng.integers(0, src.width - size[0]))
        y = int(rng.integers(0, src.height - size[1]))
        path = folder / f"scan_{i:05d}.jpg"
        src.crop((x, y, x + size[0], y + size[1])).save(path, quality=90)
        ids.append(f"scan_{i:05d}")
        uris.append(path.name)  # relative to the manifest's folder
    manifest = folder / "manifest.parquet"
    pq.write_table(pa.table({"id": ids, "uri": uris}), manifest)
    return manifest


def cli(*args: str, env: dict | None = None, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "archive_colorize.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})}, **kw)


def popen_cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "archive_colorize.cli", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
