#!/usr/bin/env bash
# The main job on the embedded default (tiny model, synthetic data, CPU). Makes or reuses .venv first.
#   bash scripts/demo.sh [CONFIG.yaml ...] [key=value ...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"   # the demo needs nothing from the Hub
exec .venv/bin/python scripts/demo.py "$@"
