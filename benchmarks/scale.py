"""Scale: a 100,000-row manifest through `archive-colorize run`, sampling the driver's
memory while rows stream. Tiny real images (16x16 crops of the historical scans, 64
distinct files, each listed many times) and a tiny seeded model keep it to minutes on 2
CPUs: what is measured is the driver, not the network.

    python benchmarks/scale.py [--rows 100000] [--batch-size 256]

Prints a table and writes benchmarks/results/scale.json."""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
HISTORICAL = Path(os.environ.get("ARCHIVE_COLORIZE_SHARED", ROOT.parent / "shared")) / "data" / "historical"


def tiny_model(path: Path) -> None:
    from archive_colorize import ColorizationModel, ModelConfig
    from archive_colorize.model.weights import load_categories, save_weights

    torch.manual_seed(0)
    cats = load_categories(ROOT / "archive_colorize" / "categories" / "places365.txt")
    model = ColorizationModel(ModelConfig(num_classes=len(cats), width=0.125)).eval()
    model.colorization.output.weight.data *= 8
    save_weights(
        model,
        path,
        cats,
        recipe={"note": "seeded random, for the scale benchmark"},
        data={"description": "none"},
    )


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--work", default=None, help="folder for the inputs and outputs (default: a temp folder)")
    a = ap.parse_args()
    work = Path(a.work or tempfile.mkdtemp(prefix="scale-"))
    (work / "scans").mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in HISTORICAL.iterdir() if p.suffix in (".jpg", ".png"))
    names = []
    for i in range(64):
        im = Image.open(files[i % len(files)]).convert("L")
        x, y = (i * 37) % (im.width - 16), (i * 53) % (im.height - 16)
        name = f"t{i:02d}.png"
        im.crop((x, y, x + 16, y + 16)).save(work / "scans" / name)
        names.append(f"scans/{name}")
    manifest = work / "manifest.parquet"
    pq.write_table(
        pa.table(
            {"id": [f"row-{i:07d}" for i in range(a.rows)], "uri": [names[i % 64] for i in range(a.rows)]}
        ),
        manifest,
    )
    weights = work / "tiny.safetensors"
    tiny_model(weights)
    out = work / "out"
    cmd = [
        sys.executable,
        "-m",
        "archive_colorize.apps.cli",
        "run",
        str(manifest),
        "--out",
        str(out),
        "--weights",
        str(weights),
        "--working-size",
        "16",
        "--batch-size",
        str(a.batch_size),
        "--format",
        "jpeg",
    ]
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples = []  # (seconds, driver RSS MB, progress files)
    while proc.poll() is None:
        r = rss_mb(proc.pid)
        parts = len(list((out / "_progress").glob("part-*.parquet"))) if (out / "_progress").exists() else 0
        if r is not None:
            samples.append((round(time.time() - t0, 1), round(r, 1), parts))
        time.sleep(1.0)
    stdout, stderr = proc.communicate()
    wall = time.time() - t0
    if proc.returncode != 0:
        sys.exit(f"run failed ({proc.returncode}):\n{stderr[-3000:]}")
    res = pq.read_table(out / "results.parquet", columns=["status"])
    done = sum(1 for s in res.column("status").to_pylist() if s == "done")
    streaming = [s for s in samples if s[2] > 0]  # after the first progress file: rows are flowing
    q = max(1, len(streaming) // 4)
    first, last = streaming[:q], streaming[-q:]
    result = {
        "rows": a.rows,
        "done": done,
        "batch_size": a.batch_size,
        "wall_s": round(wall, 1),
        "rows_per_s": round(a.rows / wall, 1),
        "driver_rss_mb": {
            "first_quarter_median": statistics.median(s[1] for s in first),
            "last_quarter_median": statistics.median(s[1] for s in last),
            "max": max(s[1] for s in samples),
        },
        "progress_files": streaming[-1][2] if streaming else 0,
        "samples": samples,
        "machine": f"{os.cpu_count()} CPUs, {os.uname().machine}",
    }
    d = result["driver_rss_mb"]
    print(
        f"{'rows':>8} {'done':>8} {'wall s':>8} {'rows/s':>8} {'RSS 1st q MB':>13} {'RSS last q MB':>14} {'RSS max MB':>11}"
    )
    print(
        f"{a.rows:>8} {done:>8} {wall:>8.0f} {result['rows_per_s']:>8} {d['first_quarter_median']:>13} "
        f"{d['last_quarter_median']:>14} {d['max']:>11}"
    )
    dest = ROOT / "benchmarks" / "results" / "scale.json"
    dest.parent.mkdir(exist_ok=True)
    dest.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
