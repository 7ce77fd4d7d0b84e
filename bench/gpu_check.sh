#!/usr/bin/env bash
# The GPU node's check (bench/gpu_check.py): about 5 minutes on one GPU. Usage:
#   bash bench/gpu_check.sh [OUT.json]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
exec timeout 480 "$PY" bench/gpu_check.py --out "${1:-gpu_check.json}"
