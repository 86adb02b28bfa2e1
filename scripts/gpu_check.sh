#!/usr/bin/env bash
# One prepared GPU check (see scripts/gpu_check.py): training, sampling and layout speed, and end-to-end runs
# in bf16 and fp16, on SD 1.5's architecture with random weights; no network, no pretrained weights.
# Writes scripts/benchmarks/<gpu-name>.json and .md. Without a GPU it runs a scaled-down version and says so.
#   bash scripts/gpu_check.sh [--out DIR] [--budget SECONDS] [--peak-tflops N]
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if ! "$PYTHON" -c "import torch, diffusers, transformers, accelerate, datasets" 2>/dev/null; then
    echo "gpu_check: $PYTHON lacks torch, diffusers, transformers, accelerate or datasets; run scripts/setup.sh or" \
         "set PYTHON to an environment that has them" >&2
    exit 2
fi
export PYTHONUNBUFFERED=1
exec "$PYTHON" scripts/gpu_check.py "$@"
