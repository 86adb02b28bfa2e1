#!/usr/bin/env bash
# Run the test suite in the project's environment (made or reused by scripts/setup.sh).
#   bash scripts/test.sh            the default suite (slow tests left out)
#   bash scripts/test.sh --slow     everything, slow tests included
#   bash scripts/test.sh -k config  any other arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
marker=(-m "not slow")
if [ "${1:-}" = "--slow" ]; then
  marker=()
  shift
fi
exec .venv/bin/python -m pytest "${marker[@]}" "$@"
