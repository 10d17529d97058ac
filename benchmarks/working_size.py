"""Choose the default working size: time and colour difference of the chroma predicted at
several working sizes, on real scans, against the largest size as reference.

    python benchmarks/working_size.py [--weights W] [--images DIR] [--sizes 256 384 512 768 1024]

Prints a table (medians over the images) and writes benchmarks/results/working_size.json."""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from archive_colorize import Engine
from archive_colorize import decode_image
from archive_colorize import load_weights

ROOT = Path(__file__).resolve().parents[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default=None)
    ap.add_argument("--images", default=str(ROOT.parent / "shared" / "data" / "historical"))
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 384, 512, 768, 1024])
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    w = load_weights(a.weights)
    files = sorted(p for p in Path(a.images).iterdir() if p.suffix.lower() in (".jpg", ".png", ".tif"))
    ref_size = max(a.sizes)
    per = {s: {"seconds": [], "mean_abs_dab": [], "chroma": []} for s in a.sizes}
    for f in files:
        d = decode_image(f.read_bytes())
        preds = {}
        for s in a.sizes:
            eng = Engine(w, device="cpu", working_size=s)
            eng.predict(d.lightness[:64, :64])  # warm-up
            t = time.perf_counter()
            preds[s] = eng.predict(d.lightness).ab
            per[s]["seconds"].append(time.perf_counter() - t)
        h, wd = preds[ref_size].shape[1:]
        for s in a.sizes:
            up = F.interpolate(preds[s][None], size=(h, wd), mode="bilinear", align_corners=False)[0]
            per[s]["mean_abs_dab"].append(float((up - preds[ref_size]).norm(dim=0).mean()))
            per[s]["chroma"].append(float(preds[s].norm(dim=0).mean()))
    rows = []
    print(f"{'working size':>12} {'s/image':>8} {'|Δab| vs ' + str(ref_size):>14} {'mean chroma':>12}")
    for s in a.sizes:
        r = {k: statistics.median(v) for k, v in per[s].items()} | {"working_size": s}
        rows.append(r)
        print(f"{s:>12} {r['seconds']:>8.3f} {r['mean_abs_dab']:>14.2f} {r['chroma']:>12.2f}")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "working_size.json").write_text(
        json.dumps(
            {"images": len(files), "weights_sha256": w.file_sha256, "threads": a.threads, "rows": rows},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
