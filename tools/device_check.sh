#!/usr/bin/env bash
# Device check: build FP16/INT8 engines of a bundle, check each against the bundle's check set, bench
# TensorRT vs ONNX Runtime and erudite vs zoo, write one report (JSON + Markdown) with the environment.
#   tools/device_check.sh BUNDLE [--zoo ZOO_BUNDLE] [--out DIR] [--iters N]
# Needs TensorRT, Polygraphy, a CUDA GPU and a Python with erudite-edge's dependencies; without any of them
# it stops with one line and exit code 2.
# PYTHON selects the interpreter (default: python3; in a venv, its python).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ "$#" -lt 1 ]; then
  echo "usage: tools/device_check.sh BUNDLE [--zoo ZOO_BUNDLE] [--out DIR] [--iters N]" >&2
  exit 2
fi
py="${PYTHON:-python3}"
if ! command -v "$py" >/dev/null 2>&1; then
  echo "device_check: no Python at '$py': set PYTHON to the python erudite-edge is installed in (its venv's python)" >&2
  exit 2
fi
exec "$py" "$here/device_check.py" "$@"
