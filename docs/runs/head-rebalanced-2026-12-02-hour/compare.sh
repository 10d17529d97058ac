#!/usr/bin/env bash
# Issue 32's comparison, after `archive-colorize train --config training/head-rebalanced.toml
# --out runs/head-rebalanced-hour --init archive_colorize/weights/default.safetensors`:
# export the head, calibrate it as the default was (mse-budget 5 % on val rows 0-499), then
# measure it on rows 500-4999 on the inference path and with `evaluate` (AuC, top-5).
set -euo pipefail
VAL=${VAL:-../shared/data/miniplaces/val.parquet}
HERE=docs/runs/head-rebalanced-2026-12-02-hour
W=${W:-/tmp/head-rebalanced-hour}
archive-colorize weights export runs/head-rebalanced-hour --out $W.safetensors --storage int8 --info cpu=2-core --info minutes=60 --info trunk=frozen
archive-colorize weights calibrate $W.safetensors --data $VAL --rows 0:500 --criterion mse-budget --out $W-cal.safetensors \
  | tee $HERE/calibrate.txt
python docs/runs/calibration/heldout_at.py $VAL $W-cal.safetensors $HERE/heldout.json
archive-colorize evaluate --weights $W-cal.safetensors --data $VAL --rows 500:5000 --out $HERE/eval.json --device cpu
cp runs/head-rebalanced-hour/metrics.csv runs/head-rebalanced-hour.log $HERE/ 2>/dev/null || true
