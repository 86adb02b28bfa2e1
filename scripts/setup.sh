#!/usr/bin/env bash
# Make or reuse the project's virtual environment (.venv) and install Lumen into it.
#
# Reproducible by default: every package is installed at the version in scripts/constraints.txt, the versions the
# whole test suite (default and slow sets) last passed with, so a release elsewhere cannot break a fresh clone.
# LUMEN_LATEST=1 installs the newest versions instead (scripts/update_constraints.sh tests them and records them).
#
# Torch is installed first, on its own, because the build matters (it is pinned by LUMEN_TORCH_VERSION, not by
# the constraints):
#   - with an NVIDIA GPU (nvidia-smi works): the normal build from the package index;
#   - without one: a CPU build. We never let pip pull a multi-GB CUDA build onto a CPU-only machine:
#     the candidate from the configured indexes is checked with a dry run (a CUDA build of torch pulls
#     nvidia-* packages), and when it is a CUDA build the PyTorch CPU index is used instead.
# Environment knobs: LUMEN_TORCH_VERSION (default 2.13.0), LUMEN_VENV (default .venv), PYTHON,
#   LUMEN_EXTRAS (default dev; e.g. dev,deepspeed: the optional dependencies of pyproject.toml),
#   LUMEN_LATEST=1 (the newest versions instead of scripts/constraints.txt).
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${LUMEN_VENV:-.venv}"
torch_version="${LUMEN_TORCH_VERSION:-2.13.0}"
extras="${LUMEN_EXTRAS:-dev}"
constraints="scripts/constraints.txt"
cpu_index="https://download.pytorch.org/whl/cpu"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating $venv"
  "$python" -m venv "$venv"
fi
py="$venv/bin/python"
pip=("$py" -m pip --disable-pip-version-check)
log="$venv/setup-pip.log"   # pip's full output; the console gets one summary line per installation

# pip_install WHAT ARGS...: run pip install with its output in $log, then print what it installed and how long it
# took; on failure, the end of the log and where the rest is.
pip_install() {
  local what="$1" start status
  shift
  start=$(date +%s)
  echo "[setup] installing $what (pip's log: $log)"
  status=0
  "${pip[@]}" install --progress-bar off "$@" >>"$log" 2>&1 || status=$?
  if [ "$status" -ne 0 ]; then
    echo "[setup] ERROR: pip failed installing $what; the end of its log ($log):" >&2
    tail -n 15 "$log" >&2
    return "$status"
  fi
  "$py" - "$log" "$what" "$(( $(date +%s) - start ))" <<'PY'
import sys
lines = open(sys.argv[1], encoding="utf-8", errors="replace").read().splitlines()
done = [line for line in lines if line.startswith("Successfully installed ")]
names = done[-1].split()[2:] if done else []
shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
print(f"[setup] {sys.argv[2]}: {len(names)} package(s) installed in {sys.argv[3]} s" + (f" ({shown})" if names else ""))
PY
}

if "$py" -c "import torch" 2>/dev/null; then
  echo "[setup] torch $("$py" -c 'import torch; print(torch.__version__)') already installed"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "[setup] GPU found: installing torch==$torch_version (CUDA build)"
  pip_install "torch==$torch_version" "torch==$torch_version"
else
  echo "[setup] no GPU found: installing a CPU build of torch==$torch_version"
  report="$(mktemp)"
  trap 'rm -f "$report"' EXIT
  if "${pip[@]}" install --quiet --dry-run --ignore-installed --report "$report" "torch==$torch_version" 2>/dev/null \
     && "$py" -c 'import json, sys; names = [i["metadata"]["name"].lower() for i in json.load(open(sys.argv[1]))["install"]]; sys.exit(any(n.startswith("nvidia-") for n in names))' "$report"; then
    pip_install "torch==$torch_version (CPU)" "torch==$torch_version"
  else
    echo "[setup] the configured index offers a CUDA build; using the PyTorch CPU index instead"
    pip_install "torch==$torch_version (CPU)" "torch==$torch_version" --index-url "$cpu_index" || {
      echo "[setup] ERROR: could not install a CPU build of torch==$torch_version." >&2
      echo "        Install one yourself into $venv (e.g. '$py -m pip install torch --index-url $cpu_index')" >&2
      echo "        and run this script again; it keeps an installed torch." >&2
      exit 1
    }
  fi
fi

# Install the project when what decides the installation changed since the last one: pyproject.toml, the
# constraints, the extras or LUMEN_LATEST.
if [ "${LUMEN_LATEST:-0}" = "1" ]; then
  pins=()
  what="lumen (editable) with [$extras], the newest versions (LUMEN_LATEST=1)"
else
  pins=(-c "$constraints")
  what="lumen (editable) with [$extras], the versions of $constraints"
fi
stamp="$venv/.lumen-installed"
wanted="$(cat pyproject.toml "$constraints" | "$py" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())') extras=$extras latest=${LUMEN_LATEST:-0}"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  pip_install "$what" -e ".[$extras]" ${pins[@]+"${pins[@]}"} || {
    if [ "${LUMEN_LATEST:-0}" != "1" ]; then
      echo "[setup] The pinned versions of $constraints were recorded with Python 3.11 on Linux x86-64; where one" >&2
      echo "        has no build for this Python or platform, LUMEN_LATEST=1 installs the newest versions." >&2
    fi
    exit 1
  }
  echo "$wanted" > "$stamp"
else
  echo "[setup] lumen already installed in $venv ($what)"
fi
