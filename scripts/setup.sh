#!/usr/bin/env bash
# Create .venv and install conslaw with its test tools. Installs the CPU build
# torch==2.13.0 first when no torch is importable, so that pip does not pull
# a multi-GB CUDA build for the "torch>=2.4" requirement.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/pip install -q torch==2.13.0
fi
.venv/bin/pip install -q -e '.[test]'
