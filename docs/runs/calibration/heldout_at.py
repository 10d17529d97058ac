"""The shipped weights on MiniPlaces val rows 500-4999 at gain 1 and at their own gain, on
the inference path (calibrate.measure). Writes heldout.json beside this file.

    python docs/runs/calibration/heldout_at.py ../shared/data/miniplaces/val.parquet [WEIGHTS [OUT.json]]
"""

import json
import sys
from pathlib import Path

from archive_colorize.train import calibrate as cal
from archive_colorize.model.engine import Engine
from archive_colorize.model.weights import load_weights

w = load_weights(sys.argv[2] if len(sys.argv) > 2 else None)
held = cal.prepare(Engine(w, device="cpu", chroma_gain=1.0), sys.argv[1], (500, 5000))
rows = [cal.measure(held, g) for g in (1.0, w.chroma_gain)]
out = {"weights": w.file_sha256, "gain": w.chroma_gain, "heldout_rows": held.info, "at": rows}
(Path(sys.argv[3]) if len(sys.argv) > 3 else Path(__file__).with_name("heldout.json")).write_text(json.dumps(out, indent=1) + "\n")
print(json.dumps(rows))
