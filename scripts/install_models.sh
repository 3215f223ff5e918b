#!/usr/bin/env bash
# Install torchvision + timm beside an existing CPU torch==2.13.0 in $VENV without letting pip
# pull the CUDA torch stack. torchvision from PyPI is a CUDA build: its C ops do not load on
# CPU torch, so import it through conslaw.vision.import_torchvision() (shim), not plain import.
#
# Usage: VENV=.venv bash scripts/install_models.sh   (CI runs it; then import torchvision via conslaw.vision.import_torchvision())
set -euo pipefail
VENV="${VENV:-.venv}"
PY="$VENV/bin/python"
TORCHVISION_VERSION="${TORCHVISION_VERSION:-0.28.0}"   # the release paired with torch 2.13
TIMM_VERSION="${TIMM_VERSION:-}"                        # empty: newest allowed

torch_id() { "$PY" -c 'import torch; print(torch.__version__, torch.version.cuda)'; }
before="$(torch_id)"
case "$before" in
  2.13.0*" None") ;;
  *) echo "expected CPU torch 2.13.0 in $VENV, found: $before" >&2; exit 1 ;;
esac

# --no-deps on the two packages that depend on torch; their other deps installed explicitly.
"$PY" -m pip install --no-deps "torchvision==${TORCHVISION_VERSION}" "timm${TIMM_VERSION:+==$TIMM_VERSION}"
"$PY" -m pip install numpy "pillow>=5.3.0,!=8.3.*" pyyaml huggingface_hub safetensors
# Hugging Face transformers (no torch requirement of its own)
"$PY" -m pip install transformers
# Ray (conslaw[ray], no torch requirement): `conslaw reproduce ... --executor ray` and its slow test
"$PY" -m pip install "ray>=2.9"

after="$(torch_id)"
if [ "$after" != "$before" ]; then
  echo "torch changed from '$before' to '$after'" >&2; exit 1
fi
echo "torch still $after; torchvision ${TORCHVISION_VERSION}, timm, transformers and ray installed"
