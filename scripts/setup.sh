#!/usr/bin/env bash
# Create .venv and install sapo_vl into it. Usage: bash scripts/setup.sh [--dev]
#   - With an NVIDIA GPU (nvidia-smi works): a plain install, which takes the CUDA torch as usual.
#   - Without one: torch and torchvision are pinned by constraints/cpu.txt so that no CUDA wheels are downloaded.
# Re-running is cheap: pip skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[[ "${1:-}" == "--dev" ]] && extras="[dev]"
python=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$python" -m venv .venv
pip_args=(--disable-pip-version-check -q)
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "[setup] NVIDIA GPU found: installing the CUDA build of torch"
  .venv/bin/python -m pip install "${pip_args[@]}" -e ".${extras}"
else
  echo "[setup] no GPU: installing CPU torch (constraints/cpu.txt)"
  .venv/bin/python -m pip install "${pip_args[@]}" -c constraints/cpu.txt torch
  .venv/bin/python -m pip install "${pip_args[@]}" -c constraints/cpu.txt -e ".${extras}"
fi
echo "[setup] done: $(.venv/bin/python -c 'import torch, transformers; print("torch", torch.__version__, "| transformers", transformers.__version__)')"
