"""`archive-colorize run` throughput against the engine's own, on the same images.

    python benchmarks/pipeline.py [--images 240] [--working-size 512] [--repeats 1]

Each measurement is repeated (--repeats, default 3, interleaved) and the medians are used:
Ray start-up and scheduling vary from run to run by 10-20% here.

Images: 240 crops (640x480 unless --size, grayscale JPEG) of the shared historical scans. Measured side
by side in one run, with the shipped weights:
  engine    one process doing read, decode, predict, recombine, encode and write in a loop
            (2 torch threads): the best a single process does on this machine;
  run       the real CLI on a fresh local Ray (defaults), over all images, and over the
            first 8 only; throughput once started = (N - 8) / (T_N - T_8), and the fixed
            start-up cost = T_8 minus the time its 8 images take at that throughput;
  actor     the same, all images, with --recombine-on actor (a GPU's layout: decoded once,
            the colour made in the model actor) on these CPUs;
  1 thread  the same, all images, with --threads-per-actor 1 (the default before issue 13).
--size WxH makes larger images (e.g. 4000x3000); results then go to pipeline-WxH.json.
Writes benchmarks/results/pipeline.json."""

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from common import ROOT, SHARED, machine, table, write  # noqa: E402


def make_images(folder: Path, n: int, size: tuple[int, int] = (640, 480)) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in (SHARED / "data" / "historical").iterdir() if p.suffix in (".jpg", ".png"))
    ids, uris = [], []
    for i in range(n):
        im = Image.open(files[i % len(files)]).convert("L")
        w, h = size
        if im.width < w or im.height < h:
            im = im.resize((max(w, im.width), max(h, im.height)), Image.Resampling.BICUBIC)
        x = (i * 97) % (im.width - w + 1)
        y = (i * 61) % (im.height - h + 1)
        name = f"img_{i:04d}.jpg"
        im.crop((x, y, x + w, y + h)).save(folder / name, quality=90)
        ids.append(f"img_{i:04d}")
        uris.append(name)
    manifest = folder / "manifest.parquet"
    pq.write_table(pa.table({"id": ids, "uri": uris}), manifest)
    return manifest


def engine_loop(manifest: Path, working_size: int, out: Path) -> float:
    import torch

    from archive_colorize import Engine
    from archive_colorize import Provenance
    from archive_colorize import render
    from archive_colorize import decode_image
    from archive_colorize.core.storage import atomic_write_bytes
    from archive_colorize import load_weights

    torch.set_num_threads(2)
    w = load_weights(None)
    engine = Engine(w, device="cpu", working_size=working_size)
    uris = pq.read_table(manifest).column("uri").to_pylist()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for u in uris:
        d = decode_image((manifest.parent / u).read_bytes())
        pred = engine.predict(d.lightness)
        atomic_write_bytes(
            str(out / (Path(u).stem + ".png")), render(d, pred.ab, "png", Provenance(w.file_sha256))
        )
    return time.perf_counter() - t0


def cli_run(manifest: Path, out: Path, working_size: int, limit: int | None, *extra: str) -> float:
    shutil.rmtree(out, ignore_errors=True)
    cmd = (
        [
            sys.executable,
            "-m",
            "archive_colorize.apps.cli",
            "run",
            str(manifest),
            "--out",
            str(out),
            "--working-size",
            str(working_size),
        ]
        + (["--limit", str(limit)] if limit else [])
        + list(extra)
    )
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(r.stderr[-3000:])
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=240)
    ap.add_argument("--working-size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3, help="runs of each measurement; medians are reported")
    ap.add_argument(
        "--size", default="640x480", help="WxH of each image (crops, resized up where the scan is smaller)"
    )
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pipeline-bench-"))
    manifest = make_images(work / "in", a.images, tuple(int(v) for v in a.size.split("x")))
    n = a.images
    runs = {"engine": [], "small": [], "full": [], "actor": [], "one_thread": []}
    for i in range(a.repeats):  # interleaved, so drift on the machine hits all of them alike
        runs["engine"].append(engine_loop(manifest, a.working_size, work / "engine-out"))
        runs["small"].append(cli_run(manifest, work / "run-small", a.working_size, 8))
        runs["full"].append(cli_run(manifest, work / "run-full", a.working_size, None))
        # the GPU layout on these CPUs: decoded once, colour made in the model actor
        runs["actor"].append(
            cli_run(manifest, work / "run-actor", a.working_size, None, "--recombine-on", "actor")
        )
        # the default before issue 13: one torch thread per CPU the actor reserved
        runs["one_thread"].append(
            cli_run(manifest, work / "run-1t", a.working_size, None, "--threads-per-actor", "1")
        )
        print(
            f"round {i + 1}: engine {runs['engine'][-1]:.1f} s, run(8) {runs['small'][-1]:.1f} s, "
            f"run({n}) {runs['full'][-1]:.1f} s, run({n}, --recombine-on actor) {runs['actor'][-1]:.1f} s, "
            f"run({n}, --threads-per-actor 1) {runs['one_thread'][-1]:.1f} s",
            flush=True,
        )
    t_engine, t_small, t_full, t_actor, t_one = (
        statistics.median(runs[k]) for k in ("engine", "small", "full", "actor", "one_thread")
    )
    rate = (n - 8) / (t_full - t_small)
    startup = t_small - 8 / rate
    print(f"run: {n} images in {t_full:.1f} s; 8 images in {t_small:.1f} s", flush=True)
    rows = [
        {
            "what": "engine loop (1 process, 2 threads)",
            "images": n,
            "seconds": t_engine,
            "images_per_s": n / t_engine,
        },
        {
            "what": "archive-colorize run, all images",
            "images": n,
            "seconds": t_full,
            "images_per_s": n / t_full,
        },
        {
            "what": "archive-colorize run, once started",
            "images": n - 8,
            "seconds": t_full - t_small,
            "images_per_s": rate,
        },
        {
            "what": "run --recombine-on actor, all images",
            "images": n,
            "seconds": t_actor,
            "images_per_s": n / t_actor,
        },
        {
            "what": "run --threads-per-actor 1, all images",
            "images": n,
            "seconds": t_one,
            "images_per_s": n / t_one,
        },
    ]
    print()
    print(
        table(
            rows,
            [
                ("what", "", "s"),
                ("images", "images", "d"),
                ("seconds", "seconds", ".1f"),
                ("images_per_s", "images/s", ".2f"),
            ],
        )
    )
    print(f"\nrun once started / engine: {rate / (n / t_engine):.0%}; fixed start-up cost: {startup:.1f} s")
    path = write(
        "pipeline" if a.size == "640x480" else f"pipeline-{a.size}",
        {
            "machine": machine(),
            "images": n,
            "size": a.size,
            "working_size": a.working_size,
            "rows": rows,
            "runs": runs,
            "run_vs_engine": rate / (n / t_engine),
            "startup_s": startup,
        },
    )
    print(f"wrote {path}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
