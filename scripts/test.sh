#!/usr/bin/env bash
# Lint (ruff, settings in pyproject.toml), then run the test suite, in the project's environment (made or reused
# by scripts/setup.sh; LUMEN_VENV and the other knobs of setup.sh apply).
#   bash scripts/test.sh            the linter and the default set (the tests not marked slow)
#   bash scripts/test.sh --slow     the linter and the slow set alone
#   bash scripts/test.sh --all      the linter, the default set, then the slow set (what CI runs), each timed
#   bash scripts/test.sh -k config  any other arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python=("${LUMEN_VENV:-.venv}/bin/python")
echo "[test] ruff check"
"${python[@]}" -m ruff check .

# run_set NAME MARKER ARGS...: one pytest run, timed.
run_set() {
  local name="$1" marker="$2" start status=0
  shift 2
  start=$(date +%s)
  echo "[test] the $name set (-m \"$marker\")"
  "${python[@]}" -m pytest -m "$marker" "$@" || status=$?
  echo "[test] the $name set: $( [ "$status" -eq 0 ] && echo passed || echo "FAILED (pytest exit code $status)" ) in $(( $(date +%s) - start )) s"
  return "$status"
}

case "${1:-}" in
  --slow) shift; run_set slow "slow" "$@" ;;
  --all)
    shift
    status=0
    run_set default "not slow" "$@" || status=$?
    run_set slow "slow" "$@" || status=$?   # run even when the default set failed: one CI run shows both
    exit "$status"
    ;;
  *) run_set default "not slow" "$@" ;;
esac
