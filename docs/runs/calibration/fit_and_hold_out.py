"""The shipped gain, fitted and checked as the model card reports it (issue 23).

Fits every criterion on MiniPlaces val rows 0-499 (the training monitor rows), then
measures each fitted gain, and the standard curve, on rows 500-4999, which nothing was
chosen on. Writes fit.json beside this file.

    python docs/runs/calibration/fit_and_hold_out.py ../shared/data/miniplaces/val.parquet
"""

import json
import sys
import time
from pathlib import Path

import torch

from archive_colorize.train import calibrate as cal
from archive_colorize.model.engine import Engine
from archive_colorize.model.weights import load_weights

data = sys.argv[1]
weights = sys.argv[2] if len(sys.argv) > 2 else None
torch.set_num_threads(2)
engine = Engine(load_weights(weights), device="cpu", chroma_gain=1.0)
t0 = time.time()
fit_rows = cal.prepare(engine, data, (0, 500))
fits = {c: cal.fit(fit_rows, c) for c in cal.CRITERIA}
print({c: f["gain"] for c, f in fits.items()}, f"{time.time() - t0:.0f} s", flush=True)
held = cal.prepare(engine, data, (500, 5000))
gains = sorted(set(cal.CURVE_GAINS) | {f["gain"] for f in fits.values()})
curve = []
for g in gains:
    curve.append(cal.measure(held, g))
    print(curve[-1], flush=True)
out = {"weights": engine.weights.file_sha256, "fit_rows": fit_rows.info, "heldout_rows": held.info,
       "fits": fits, "heldout_curve": curve, "seconds": round(time.time() - t0)}
Path(__file__).with_name("fit.json").write_text(json.dumps(out, indent=1) + "\n")
