#!/usr/bin/env bash
# Issue 32's second loss, after `archive-colorize train --config training/head-colourfulness.toml
# --out runs/head-colourfulness-2 --init archive_colorize/weights/default.safetensors
# train.feature_cache=runs/head-colourfulness/features`: export the head, calibrate it as the
# default was (mse-budget 5 % on val rows 0-499), measure it on rows 500-4999 on the inference
# path and with `evaluate` (AuC, top-5), and draw the historical scans, new against old.
set -euo pipefail
VAL=${VAL:-../shared/data/miniplaces/val.parquet}
RUN=${RUN:-runs/head-colourfulness-2}
HERE=docs/runs/head-colourfulness-2026-12-02
W=${W:-/tmp/head-colourfulness}
archive-colorize weights export $RUN --out $W.safetensors --storage int8 --info cpu=2-core --info minutes=60 --info trunk=frozen
archive-colorize weights calibrate $W.safetensors --data $VAL --rows 0:500 --criterion mse-budget --out $W-cal.safetensors \
  | tee $HERE/calibrate.txt
python docs/runs/calibration/heldout_at.py $VAL $W-cal.safetensors $HERE/heldout.json
archive-colorize evaluate --weights $W-cal.safetensors --data $VAL --rows 500:5000 --out $HERE/eval.json --device cpu
cp $RUN/metrics.csv $HERE/
cp ${RUN}.log $HERE/train.log 2>/dev/null || true
python docs/make_contact_sheet.py ../shared/data/historical /tmp/colourfulness-sheet.jpg --variant default --variant $W-cal.safetensors
