"""Helpers for the reliability suite: many small real scans, and running the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import pyarrow.parquet as pq
from PIL import Image

from ..conftest import ROOT, SAMPLE

WORKING = 64


def tiny_scans(folder: Path, n: int, size: tuple[int, int] = (64, 48), seed: int = 0) -> Path:
    """n small grayscale JPEGs cut from the committed sample photographs, and their manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sources = [
        Image.open(SAMPLE / n).convert("L")
        for n in ("astronaut.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg")
    ]
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
    return subprocess.run(
        [sys.executable, "-m", "archive_colorize.apps.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        **kw,
    )


def popen_cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "archive_colorize.apps.cli", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def wait_until_stopped(proc: subprocess.Popen, timeout: float = 240) -> None:
    """Until the process has frozen itself at its crash point (state T in /proc)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, (proc.communicate()[1] or "")[-1500:]
        stat = Path(f"/proc/{proc.pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "T":
            return
        time.sleep(0.05)
    proc.kill()
    pytest.fail("the run never reached its stop point")
