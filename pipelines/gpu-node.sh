#!/usr/bin/env bash
# The GPU run book's commands on the lent machine (training/gpu/README.md, "The whole node").
#
#   bash pipelines/gpu-node.sh add .device/wheels/part-NN   # one per part, back to back
#   bash pipelines/gpu-node.sh run [gpu_node.py options]     # install, then the whole-node job
#
# `add` copies a carried part to /tmp/wheels, which lives while the machine stays warm (30 s
# after each command). `run` joins the parts, checks their sha256, installs the wheels with
# --no-index (no network there), puts the repository on PYTHONPATH and runs
# pipelines/gpu_node.py with its JSON and log under $OUT. Where Ray is already installed (here,
# on the CPU) `run` skips the install.
set -euo pipefail
cd "$(dirname "$0")/.."
WH=${WHEELS:-/tmp/wheels}
PY=${PYTHON:-python3}
case "${1:-}" in
  add)
    mkdir -p "$WH"
    cp "$2" "$WH/"
    [ -f "$(dirname "$2")/wheels.sha256" ] && cp "$(dirname "$2")/wheels.sha256" "$WH/"
    ls -l "$WH"
    ;;
  run)
    shift
    if ! "$PY" -c "import ray" 2>/dev/null; then
      (cd "$WH" && cat part-* > wheels.tar && sha256sum -c wheels.sha256 && mkdir -p all && tar -C all -xf wheels.tar)
      "$PY" -m pip install --quiet --no-index --no-deps "$WH"/all/*.whl
    fi
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
    "$PY" pipelines/gpu_node.py --out "${OUT:-gpu-node-out}" "$@"
    ;;
  *)
    echo "usage: $0 add PART | run [options]" >&2
    exit 2
    ;;
esac
