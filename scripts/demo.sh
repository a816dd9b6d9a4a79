#!/usr/bin/env bash
# Set everything up, then run the offline demo: a real distillation on CPU. Extra arguments go to `rdistill demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 LITELLM_LOCAL_MODEL_COST_MAP=True
rdistill demo "$@"
