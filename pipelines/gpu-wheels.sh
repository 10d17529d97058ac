#!/usr/bin/env bash
# Pack the wheels the lent GPU machine lacks (Ray and a few small ones; it has torch,
# pyarrow, pillow, opencv, rich, typer, fsspec, safetensors, tifffile, urllib3, requests,
# aiohttp, msgpack, protobuf, pyyaml, click), split into parts that each fit one upload beside
# the repository (64 MiB in all; the repository is about 44 MiB with the shipped weights).
#
#   bash pipelines/gpu-wheels.sh [DEST=.device/wheels] [PART_MIB=17]
#
# Measured on 2026-12-02: ray-2.60.0 cp312 is 75.6 MiB, the rest 0.8 MiB; 77 MiB in five parts
# of 17 MiB. `.device/` is git-ignored: the parts travel only as `carry`.
set -euo pipefail
DEST=${1:-.device/wheels}
PART_MIB=${2:-17}
PY=${PYTHON:-python}
rm -rf "$DEST"
mkdir -p "$DEST/all"
"$PY" -m pip download --quiet --only-binary=:all: --implementation cp --python-version 3.12 \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  --no-deps -d "$DEST/all" \
  ray==2.60.0 jsonschema jsonschema-specifications referencing rpds-py isal defusedxml
tar -C "$DEST/all" -cf "$DEST/wheels.tar" .
(cd "$DEST" && split -b "${PART_MIB}M" -d -a 2 wheels.tar part- && sha256sum wheels.tar > wheels.sha256)
rm -rf "$DEST/all" "$DEST/wheels.tar"
ls -l "$DEST"
