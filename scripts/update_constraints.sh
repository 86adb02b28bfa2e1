#!/usr/bin/env bash
# Refresh scripts/constraints.txt, the versions scripts/setup.sh installs: make a fresh environment with the
# newest versions of every dependency (LUMEN_LATEST=1, the extras CI installs), run the whole suite on it (the
# default and the slow set, as CI does), and only when both pass write its versions as the new constraints.
# Commit the file with the change that needed it; CI then installs exactly these versions.
#   bash scripts/update_constraints.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export LUMEN_VENV="$work/venv" LUMEN_LATEST=1 LUMEN_EXTRAS="${LUMEN_EXTRAS:-dev,deepspeed}"
bash scripts/test.sh --all "$@"
{
  echo "# The versions the whole test suite (default and slow sets) last passed with, on Python"
  echo "# $("$LUMEN_VENV/bin/python" -c 'import platform; print(platform.python_version(), "/", platform.system(), platform.machine())'), $(date -u +%Y-%m-%d)."
  echo "# scripts/setup.sh installs these (LUMEN_LATEST=1: the newest instead); scripts/update_constraints.sh"
  echo "# tests the newest and rewrites this file. Torch is pinned by LUMEN_TORCH_VERSION in setup.sh instead."
  "$LUMEN_VENV/bin/python" -m pip --disable-pip-version-check freeze --exclude-editable \
    | grep -v -i -E '^(torch|triton|nvidia-[a-z0-9-]*)==' | LC_ALL=C sort -f
} > "$work/constraints.txt"
mv "$work/constraints.txt" scripts/constraints.txt
echo "[constraints] scripts/constraints.txt written ($(grep -c '==' scripts/constraints.txt) packages)"
