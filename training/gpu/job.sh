#!/usr/bin/env bash
# The GPU training job for the lent H100/H200 (torch, pyarrow, pillow, typer, rich; no Ray).
# Run from the repository root on the device with the packed data and wheels carried:
#   carry: [".device"]   command: bash training/gpu/job.sh
# It trains the full-width network (training/miniplaces.toml) for MINUTES, exports fp32 and
# int8 weights, evaluates both on the held-out val images, and leaves under $OUT the int8
# weights in <16 MiB pieces, the fp32 metrics, both evaluation reports and the logs.
# Tested on the CPU with: OUT=/tmp/gpu-out MINUTES=0.2 DEVICE=cpu bash training/gpu/job.sh
set -euo pipefail
OUT=${OUT:?set OUT}
MINUTES=${MINUTES:-7}
DEVICE=${DEVICE:-cuda}
BATCH=${BATCH:-128}
EVAL_LIMIT=${EVAL_LIMIT:-4500}
mkdir -p "$OUT"
python - <<'PY' || pip install --no-index --quiet .device/wheels/*.whl
import fsspec, safetensors  # noqa: F401
PY
export PYTHONPATH=$PWD
start=$(date +%s)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/gpu.txt" 2>/dev/null || echo "cpu" > "$OUT/gpu.txt"
python -m archive_colorize.cli train --config training/miniplaces.toml --out .device/run \
  data.train=$PWD/.device/data/train.parquet data.val=$PWD/.device/data/val-monitor.parquet \
  train.use_ray=false train.use_gpu=$([ "$DEVICE" = cuda ] && echo true || echo false) \
  train.batch_size=$BATCH train.steps=1000000 train.max_minutes=$MINUTES \
  train.eval_every=200 train.checkpoint_every=500 train.log_every=50 2>&1 | tee "$OUT/train.log"
minutes=$(( ($(date +%s) - start) / 60 ))
cp .device/run/metrics.csv "$OUT/metrics.csv"
for storage in fp32 int8; do
  python -m archive_colorize.cli weights export .device/run --out .device/$storage.safetensors --storage $storage \
    --info "gpu=\"$(head -1 "$OUT/gpu.txt")\"" --info minutes=$minutes --info interim=false
  python -m archive_colorize.cli evaluate --weights .device/$storage.safetensors --device "$DEVICE" \
    --data .device/data/val-heldout.parquet --limit "$EVAL_LIMIT" --out "$OUT/eval-$storage.json" | tee -a "$OUT/eval.log"
done
split -b 15M -d .device/int8.safetensors "$OUT/int8.safetensors.part-"
sha256sum .device/int8.safetensors > "$OUT/int8.sha256"
echo "gpu_minutes=$minutes" >> "$OUT/gpu.txt"
# here: cat int8.safetensors.part-* > w.safetensors && sha256sum -c (edit the path in int8.sha256)
