#!/usr/bin/env bash
# The staged GPU training job: all of MiniPlaces arrives in parts (one upload each) while
# the full-width network already trains on the first. Run from the repository root on the
# lent machine (torch, pyarrow, pillow, typer, rich; no Ray), one prepared command per stage,
# issued back to back (the machine stays warm ~30 s between commands):
#
#   carry [".device/parts/part-1"]  bash training/gpu/stage.sh start  .device/parts/part-1
#   carry [".device/parts/part-2"]  bash training/gpu/stage.sh add    .device/parts/part-2
#   carry [".device/parts/part-3"]  bash training/gpu/stage.sh finish .device/parts/part-3
#
# start: copies the part to $STAGE/data, starts training in the background (setsid, so it
#        outlives the command) and returns once the first steps are logged.
# add:   copies the next part in; the trainer picks new train-*.parquet up at its next epoch.
# finish: adds its part (if given), waits for the trainer's end (train.max_minutes), exports
#        the best monitored checkpoint as fp32 and int8, evaluates both on the held-out val
#        images, benchmarks the step, and leaves weights (int8, in <16 MiB pieces), metrics
#        and logs under $OUT.
# single: start and finish in one command, with whatever one part holds (the fallback when
#        a machine is lost part-way: pack it with --parts 1).
#
# Tested on the CPU (tests/test_gpu_stage.py) with DEVICE=cpu and a tiny network through EXTRA.
set -euo pipefail
cmd=${1:?start|add|finish|single}
part=${2:-}
OUT=${OUT:?set OUT}
STAGE=${STAGE:-/tmp/archive-colorize-stage}
MINUTES=${MINUTES:-7.5}
DEVICE=${DEVICE:-cuda}
BATCH=${BATCH:-128}
EVAL_LIMIT=${EVAL_LIMIT:-4500}
EXTRA=${EXTRA:-}
BENCH=${BENCH:-1}
PY=${PYTHON:-python3}
mkdir -p "$OUT" "$STAGE/data"
log() { echo "[stage $cmd $(date +%T)] $*"; }
# by its command line, not by $!: setsid forks when it leads a process group, and $! is then gone
trainer_alive() { pgrep -f "archive_colorize.apps.cli train .*--out $STAGE/run" > /dev/null; }

add_part() {  # atomic per file: the trainer's glob never sees half a Parquet file
  [ -n "$1" ] || return 0
  for f in "$1"/*; do
    name=$(basename "$f")
    cp "$f" "$STAGE/data/.$name.tmp" && mv "$STAGE/data/.$name.tmp" "$STAGE/data/$name"
  done
  log "added $(ls "$1" | tr '\n' ' ')"
}

start() {
  rm -rf "$STAGE/code" && mkdir -p "$STAGE/code"
  cp -r archive_colorize training pyproject.toml "$STAGE/code/"  # the trainer's code, safe from later uploads
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$STAGE/gpu.txt" 2>/dev/null || echo "cpu" > "$STAGE/gpu.txt"
  date +%s > "$STAGE/started"
  # shellcheck disable=SC2086
  # No `cd X && python ... &`: the & would background the whole list in a subshell that keeps
  # this command's stdout open (a caller reading it would wait for the end of training).
  (cd "$STAGE/code"
   PYTHONPATH="$STAGE/code" PYTHONUNBUFFERED=1 setsid nohup "$PY" -m archive_colorize.apps.cli train \
    --config training/miniplaces.toml --out "$STAGE/run" \
    "data.train=$STAGE/data/train-*.parquet" "data.val=$STAGE/data/val-monitor.parquet" \
    "data.categories=$STAGE/data/categories.txt" data.on_device=true data.val_limit=500 \
    train.use_ray=false train.use_gpu=$([ "$DEVICE" = cuda ] && echo true || echo false) \
    train.batch_size=$BATCH train.steps=10000000 train.max_minutes=$MINUTES \
    train.eval_every=500 train.checkpoint_every=1000 train.keep_checkpoints=20 train.log_every=100 $EXTRA \
    > "$STAGE/train.log" 2>&1 < /dev/null &)
  for _ in $(seq 120); do  # until the first logged step, or the trainer's death
    grep -q "^step " "$STAGE/train.log" 2>/dev/null && break
    trainer_alive || { cat "$STAGE/train.log"; log "trainer died"; exit 1; }
    sleep 1
  done
  tail -n 5 "$STAGE/train.log"
}

finish() {
  while trainer_alive; do sleep 2; done
  tail -n 4 "$STAGE/train.log"
  grep -q "^latest checkpoint: ." "$STAGE/train.log" || { cp "$STAGE/train.log" "$OUT/"; log "training failed"; exit 1; }
  cp "$STAGE/train.log" "$OUT/"
  R="$STAGE/results" && mkdir -p "$R"  # small files travel back as one archive: $OUT returns at most 8 files
  cp "$STAGE/train.log" "$STAGE/run/metrics.csv" "$STAGE/gpu.txt" "$R/"
  minutes=$(( ($(date +%s) - $(cat "$STAGE/started")) / 60 ))
  best=$("$PY" training/gpu/best_checkpoint.py "$STAGE/run")
  log "exporting $best"
  gpu=$(head -1 "$STAGE/gpu.txt" | cut -d, -f1)
  for storage in fp32 int8; do
    "$PY" -m archive_colorize.apps.cli weights export "$best" --out "$STAGE/$storage.safetensors" --storage $storage \
      --info "gpu=\"$gpu\"" --info "minutes=$MINUTES" --info interim=false
    "$PY" -m archive_colorize.apps.cli evaluate --weights "$STAGE/$storage.safetensors" --device "$DEVICE" \
      --data "$STAGE/data/val-heldout.parquet" --limit "$EVAL_LIMIT" --out "$R/eval-$storage.json" | tee -a "$R/eval.log"
  done
  split -b 15M -d "$STAGE/int8.safetensors" "$OUT/int8.safetensors.part-"
  (cd "$STAGE" && sha256sum int8.safetensors) > "$R/int8.sha256"
  tar -czf "$OUT/results.tar.gz" -C "$R" .
  if [ "$BENCH" = 1 ]; then
    "$PY" benchmarks/train.py --device "$DEVICE" --batch "$BATCH" --precisions fp32,bf16 --steps "${BENCH_STEPS:-30}" --streaming-steps 2 \
      --data "$STAGE/data/train-00.parquet" --limit 4096 --out "$R/bench-train.json" --width $([ "$DEVICE" = cuda ] && echo 1 || echo 0.125) \
      2>&1 | tee "$R/bench.log" || log "benchmark failed (the weights are still good)"
  fi
  echo "minutes_since_start=$minutes" >> "$R/gpu.txt"
  tar -czf "$OUT/results.tar.gz" -C "$R" .
  ls -la "$OUT"
}

case "$cmd" in
  start) add_part "$part"; start ;;
  add) add_part "$part"; tail -n 3 "$STAGE/train.log" ;;
  finish) add_part "$part"; finish ;;
  single) add_part "$part"; start; finish ;;
  *) echo "unknown stage $cmd" >&2; exit 2 ;;
esac
