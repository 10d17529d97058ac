"""Pack all of MiniPlaces for the lent GPU machine in parts that each fit one upload.

One upload (the repository plus carried files) is capped at 64 MiB, and the repository
itself is about 42 MiB since it ships the full-width int8 weights (it was 7 MiB for the run
of 2026-11-29, which used three parts of 47 MiB: `--parts 3 --budget-mib 47`). The 40k
training JPEGs (about 4.4 KB each) are re-encoded as WebP at quality 70 (about 3.0 KB each,
114 MiB in all; JPEG at quality 70 is 3.9 KB: measured by `--measure`), then split into parts of at most --budget-mib each:

    part-1/  categories.txt, val-monitor.parquet (val rows 0-499), train-00.parquet
    part-2/  train-01.parquet
    ...
    part-N/  val-heldout.parquet (val rows 500-4999, the original JPEGs), train-0{N-1}.parquet

The validation images keep their original bytes: the held-out evaluation must see what the
interim model's evaluation saw. `--parts 1 --train-mib M` packs a single-upload fallback
(a part of the training set, the monitor and the held-out images), for a fresh machine
when the staged run was lost.

    python training/gpu/pack_miniplaces.py --shared ../shared --out .device/parts

Nothing written here is committed (.device/ is git-ignored)."""

import argparse
import io
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

ROW_OVERHEAD = 40  # bytes per row beside the image in an uncompressed Parquet file (label, ids)


def reencode(data: bytes, fmt: str = "WEBP", quality: int = 70) -> bytes:
    im = Image.open(io.BytesIO(data)).convert("RGB")
    buf = io.BytesIO()
    if fmt == "WEBP":
        im.save(buf, format="WEBP", quality=quality, method=4)
    else:
        im.save(buf, format="JPEG", quality=quality, optimize=True)
    return buf.getvalue()


def _reencode_many(args):
    blobs, fmt, quality = args
    return [reencode(b, fmt, quality) for b in blobs]


def reencode_all(blobs: list[bytes], fmt: str, quality: int) -> list[bytes]:
    chunks = [blobs[i : i + 1000] for i in range(0, len(blobs), 1000)]
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        return [b for part in pool.map(_reencode_many, [(c, fmt, quality) for c in chunks]) for b in part]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default="../shared")
    ap.add_argument("--out", default=".device/parts")
    ap.add_argument(
        "--budget-mib", type=float, default=20.0, help="data per part (the repository travels beside it)"
    )
    ap.add_argument("--parts", type=int, default=7)
    ap.add_argument(
        "--train-mib", type=float, default=0, help="--parts 1: training bytes to include (0 = what fits)"
    )
    ap.add_argument("--format", default="WEBP", choices=["WEBP", "JPEG"])
    ap.add_argument("--quality", type=int, default=70)
    ap.add_argument("--monitor", type=int, default=500, help="val images used for monitoring during training")
    ap.add_argument(
        "--heldout", type=int, default=0, help="held-out val images to pack (0 = all 4,500 after the monitor)"
    )
    ap.add_argument(
        "--measure", type=int, default=0, help="only print bytes/image of WebP and JPEG on this many images"
    )
    a = ap.parse_args()
    mp = Path(a.shared) / "data" / "miniplaces"
    if a.measure:
        blobs = (
            pq.read_table(mp / "train-00.parquet", columns=["image"]).column("image").to_pylist()[: a.measure]
        )
        print(f"original: {sum(map(len, blobs)) / len(blobs):.0f} B/image")
        for fmt in ("WEBP", "JPEG"):
            out = reencode_all(blobs, fmt, a.quality)
            print(f"{fmt} q{a.quality}: {sum(map(len, out)) / len(out):.0f} B/image")
        return
    out = Path(a.out)
    val = pq.read_table(mp / "val.parquet")
    monitor, heldout = val.slice(0, a.monitor), val.slice(a.monitor, a.heldout or None)
    train = pa.concat_tables([pq.read_table(p) for p in sorted(mp.glob("train-*.parquet"))])
    blobs = reencode_all(train.column("image").to_pylist(), a.format, a.quality)
    sizes = [len(b) + ROW_OVERHEAD for b in blobs]
    print(
        f"{len(blobs)} training images re-encoded as {a.format} q{a.quality}: {sum(sizes) / 2**20:.1f} MiB, "
        f"{sum(sizes) / len(sizes):.0f} B/image"
    )

    def bytes_of(t: pa.Table) -> int:
        buf = pa.BufferOutputStream()
        pq.write_table(t, buf, compression="none")
        return buf.getvalue().size

    fixed = {1: bytes_of(monitor) + (mp / "categories.txt").stat().st_size}
    fixed[a.parts] = fixed.get(a.parts, 0) + bytes_of(heldout)
    budget = a.budget_mib * 2**20
    start = 0
    for k in range(1, a.parts + 1):
        room = budget - fixed.get(k, 0)
        if a.parts == 1 and a.train_mib:
            room = min(room, a.train_mib * 2**20)
        end, used = start, 0
        while end < len(blobs) and used + sizes[end] <= room:
            used += sizes[end]
            end += 1
        d = out / f"part-{k}"
        d.mkdir(parents=True, exist_ok=True)
        rows = train.slice(start, end - start)
        rows = rows.set_column(
            rows.schema.get_field_index("image"), "image", pa.array(blobs[start:end], pa.binary())
        )
        pq.write_table(rows, d / f"train-{k - 1:02d}.parquet", compression="none")
        if k == 1:
            pq.write_table(monitor, d / "val-monitor.parquet")
            (d / "categories.txt").write_bytes((mp / "categories.txt").read_bytes())
        if k == a.parts:
            pq.write_table(heldout, d / "val-heldout.parquet")
        total = sum(f.stat().st_size for f in d.iterdir())
        print(f"{d}: {end - start} training images, {total / 2**20:.1f} MiB in all")
        start = end
    if start < len(blobs):
        print(
            f"left out: {len(blobs) - start} training images (raise --budget-mib or --parts to include them)"
        )


if __name__ == "__main__":
    main()
