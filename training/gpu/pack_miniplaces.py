"""Pack MiniPlaces for the lent GPU machine, whose upload (repository + carried files) is
capped at 64 MiB: re-encode the training JPEGs (128x128, quality 70) until the budget is
spent, and split val.parquet into a held-out evaluation part and a small monitoring part.

    python training/gpu/pack_miniplaces.py --shared ../shared --budget-mib 50 --out .device/data

Nothing written here is committed (.device/ is git-ignored)."""

import argparse
import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image


def reencode(data: bytes, quality: int) -> bytes:
    im = Image.open(io.BytesIO(data)).convert("RGB")
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality, optimize=True)
    return buf.getvalue()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default="../shared")
    ap.add_argument("--out", default=".device/data")
    ap.add_argument("--budget-mib", type=float, default=50.0)
    ap.add_argument("--quality", type=int, default=70)
    ap.add_argument("--monitor", type=int, default=500, help="val images used for monitoring during training")
    a = ap.parse_args()
    mp = Path(a.shared) / "data" / "miniplaces"
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    val = pq.read_table(mp / "val.parquet")
    monitor, heldout = val.slice(0, a.monitor), val.slice(a.monitor)
    pq.write_table(monitor, out / "val-monitor.parquet")
    pq.write_table(heldout, out / "val-heldout.parquet")
    budget = a.budget_mib * 2**20 - sum(p.stat().st_size for p in out.glob("val-*.parquet"))
    rows, used = {"image": [], "label": [], "category": [], "image_id": []}, 0
    for shard in sorted(mp.glob("train-*.parquet")):
        t = pq.read_table(shard)
        for r in t.to_pylist():
            blob = reencode(r["image"], a.quality)
            if used + len(blob) + 40 > budget:
                break
            used += len(blob) + 40
            for k in rows:
                rows[k].append(blob if k == "image" else r[k])
        else:
            continue
        break
    pq.write_table(pa.table(rows), out / "train.parquet", compression="none")
    print(f"packed {len(rows['label'])} training images ({used / 2**20:.1f} MiB), "
          f"{monitor.num_rows} monitor + {heldout.num_rows} held-out val images into {out}")


if __name__ == "__main__":
    main()
