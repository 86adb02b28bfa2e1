#!/usr/bin/env bash
# The main job on the embedded default (the shipped small model, synthetic data, CPU). Makes or reuses .venv first.
#   bash scripts/demo.sh [CONFIG.yaml ...] [key=value ...]
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/setup.sh
export LUMEN_DEMO_SETUP_SECONDS=$(( $(date +%s) - start ))   # shown in the demo's table of stage times
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"   # the demo needs nothing from the Hub
exec "${LUMEN_VENV:-.venv}/bin/lumen" demo "$@"
