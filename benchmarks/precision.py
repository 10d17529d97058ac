"""How far the opt-in lossy engines are from fp32 on real scans (held out: not the
calibration images), with the shipped weights.

    python benchmarks/precision.py [--working-size 512] [--images 6]

Per scan, against fp32: the a*b* error |Δa*b*| (Euclidean, CIE units; 2.3 is about one
just-noticeable difference) as mean, 99th percentile and max over the predicted chroma,
and whether the top-1 scene agrees. L* is the original's in every output, so the a*b*
error is the whole difference; the RGB PSNR is kept for comparison with older figures.
Writes benchmarks/results/precision.json."""

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import SHARED, machine, table, write  # noqa: E402

from archive_colorize import Engine  # noqa: E402
from archive_colorize import recombine  # noqa: E402
from archive_colorize import decode_image  # noqa: E402
from archive_colorize import load_weights  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--working-size", type=int, default=512)
    ap.add_argument("--images", type=int, default=6)
    a = ap.parse_args()
    torch.set_num_threads(2)
    w = load_weights(None)
    precisions = ["int8"] + (
        ["bf16"] if "avx512_bf16" in machine()["isa"] or "amx_tile" in machine()["isa"] else []
    )
    engines = {
        p: Engine(w, device="cpu", working_size=a.working_size, precision=p) for p in ["fp32", *precisions]
    }
    files = sorted((SHARED / "data" / "historical").glob("*.jpg"))[: a.images]
    rows = []
    for f in files:
        d = decode_image(f.read_bytes())
        preds = {p: e.predict(d.lightness) for p, e in engines.items()}
        ref = recombine(d.lightness, preds["fp32"].ab).astype(np.float64)
        for p in precisions:
            mse = float(((recombine(d.lightness, preds[p].ab).astype(np.float64) - ref) ** 2).mean())
            err = (preds[p].ab - preds["fp32"].ab).norm(dim=0).flatten()
            rows.append(
                {
                    "image": f.name,
                    "precision": p,
                    "dab_mean": float(err.mean()),
                    "dab_p99": float(torch.quantile(err, 0.99)),
                    "dab_max": float(err.max()),
                    "psnr_db": 10 * np.log10(255**2 / max(mse, 1e-12)),
                    "same_top1": bool(preds[p].probs.argmax() == preds["fp32"].probs.argmax()),
                }
            )
    print(
        table(
            rows,
            [
                ("image", "image", "s"),
                ("precision", "precision", "s"),
                ("dab_mean", "mean |Δa*b*|", ".3f"),
                ("dab_p99", "p99", ".2f"),
                ("dab_max", "max", ".2f"),
                ("psnr_db", "RGB PSNR dB", ".1f"),
                ("same_top1", "same top-1", ""),
            ],
        )
    )

    def over(p, key, fn):
        return fn(r[key] for r in rows if r["precision"] == p)

    summary = {
        p: {
            "dab_mean_median": over(p, "dab_mean", statistics.median),
            "dab_mean_max": over(p, "dab_mean", max),
            "dab_p99_median": over(p, "dab_p99", statistics.median),
            "dab_p99_max": over(p, "dab_p99", max),
            "dab_max": over(p, "dab_max", max),
            "psnr_db_min": over(p, "psnr_db", min),
            "psnr_db_max": over(p, "psnr_db", max),
            "same_top1": over(p, "same_top1", sum),
            "images": over(p, "same_top1", lambda v: len(list(v))),
        }
        for p in precisions
    }
    print(summary)
    print(
        f"wrote {write('precision', {'machine': machine(), 'working_size': a.working_size, 'rows': rows, 'summary': summary})}"
    )


if __name__ == "__main__":
    main()
