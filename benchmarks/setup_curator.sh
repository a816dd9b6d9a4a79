#!/usr/bin/env bash
# A venv of its own for the bespokelabs-curator baseline in bench_generation.py: curator pins litellm==1.83.7,
# which cannot share a venv with ours (litellm==1.106.2). About 2 minutes, ~600 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-curator
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet "bespokelabs-curator==0.1.31"
"$VENV/bin/python" -c "import bespokelabs.curator" && echo "curator ready: $VENV/bin/python"
