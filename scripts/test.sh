#!/usr/bin/env bash
# Lint (ruff, settings in pyproject.toml), then run the test suite, in the project's environment (made or reused
# by scripts/setup.sh).
#   bash scripts/test.sh            the linter and the default suite (slow tests left out)
#   bash scripts/test.sh --slow     everything, slow tests included
#   bash scripts/test.sh -k config  any other arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "[test] ruff check"
.venv/bin/python -m ruff check .
marker=(-m "not slow")
if [ "${1:-}" = "--slow" ]; then
  marker=()
  shift
fi
exec .venv/bin/python -m pytest "${marker[@]}" "$@"
