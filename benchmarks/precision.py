"""How far the opt-in lossy engines are from fp32 on real scans (held out: not the
calibration images), with the shipped weights.

    python benchmarks/precision.py [--working-size 512] [--images 6]

Per scan: PSNR of the 8-bit RGB output against fp32's, mean |Δa*b*| (CIE units), and
whether the top-1 scene agrees. Writes benchmarks/results/precision.json."""

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import SHARED, machine, table, write  # noqa: E402

from archive_colorize.engine import Engine, recombine  # noqa: E402
from archive_colorize.images import decode_image  # noqa: E402
from archive_colorize.weights import load_weights  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--working-size", type=int, default=512)
    ap.add_argument("--images", type=int, default=6)
    a = ap.parse_args()
    torch.set_num_threads(2)
    w = load_weights(None)
    precisions = ["int8"] + (["bf16"] if "avx512_bf16" in machine()["isa"] or "amx_tile" in machine()["isa"] else [])
    engines = {p: Engine(w, device="cpu", working_size=a.working_size, precision=p) for p in ["fp32", *precisions]}
    files = sorted((SHARED / "data" / "historical").glob("*.jpg"))[: a.images]
    rows = []
    for f in files:
        d = decode_image(f.read_bytes())
        preds = {p: e.predict(d.lightness) for p, e in engines.items()}
        ref = recombine(d.lightness, preds["fp32"].ab).astype(np.float64)
        for p in precisions:
            mse = float(((recombine(d.lightness, preds[p].ab).astype(np.float64) - ref) ** 2).mean())
            rows.append({"image": f.name, "precision": p, "psnr_db": 10 * np.log10(255**2 / max(mse, 1e-12)),
                         "mean_abs_dab": float((preds[p].ab - preds["fp32"].ab).abs().mean()),
                         "same_top1": bool(preds[p].probs.argmax() == preds["fp32"].probs.argmax())})
    print(table(rows, [("image", "image", "s"), ("precision", "precision", "s"), ("psnr_db", "PSNR dB", ".1f"),
                       ("mean_abs_dab", "mean |Δa*b*|", ".3f"), ("same_top1", "same top-1", "")]))
    summary = {p: {"psnr_db_min": min(r["psnr_db"] for r in rows if r["precision"] == p),
                   "psnr_db_median": statistics.median(r["psnr_db"] for r in rows if r["precision"] == p),
                   "psnr_db_max": max(r["psnr_db"] for r in rows if r["precision"] == p),
                   "same_top1": sum(r["same_top1"] for r in rows if r["precision"] == p)} for p in precisions}
    print(summary)
    print(f"wrote {write('precision', {'machine': machine(), 'working_size': a.working_size, 'rows': rows, 'summary': summary})}")


if __name__ == "__main__":
    main()
