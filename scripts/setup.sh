#!/usr/bin/env bash
# Make or reuse the project's virtual environment (.venv) and install Lumen into it.
#
# Torch is installed first, on its own, because the build matters:
#   - with an NVIDIA GPU (nvidia-smi works): the normal build from the package index;
#   - without one: a CPU build. We never let pip pull a multi-GB CUDA build onto a CPU-only machine:
#     the candidate from the configured indexes is checked with a dry run (a CUDA build of torch pulls
#     nvidia-* packages), and when it is a CUDA build the PyTorch CPU index is used instead.
# Environment knobs: LUMEN_TORCH_VERSION (default 2.13.0), LUMEN_VENV (default .venv), PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${LUMEN_VENV:-.venv}"
torch_version="${LUMEN_TORCH_VERSION:-2.13.0}"
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

# Reinstall the project only when pyproject.toml changed since the last install.
stamp="$venv/.lumen-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  pip_install "lumen (editable) with the dev extra" -e ".[dev]"
  touch "$stamp"
else
  echo "[setup] lumen already installed in $venv"
fi
