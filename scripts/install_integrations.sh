#!/usr/bin/env bash
# Install the training-framework integrations beside an existing CPU torch==2.13.0 in $VENV without letting
# pip pull a CUDA torch: Lightning, torchmetrics and accelerate (which the Hugging Face Trainer needs) with
# --no-deps, their other requirements explicitly; TensorBoard, W&B, mypy and nbclient/ipykernel normally.
#
# Usage: VENV=.venv bash scripts/install_integrations.sh   (CI runs it after scripts/install_models.sh)
set -euo pipefail
VENV="${VENV:-.venv}"
PY="$VENV/bin/python"

torch_id() { "$PY" -c 'import torch; print(torch.__version__, torch.version.cuda)'; }
before="$(torch_id)"

# the packages that require torch: --no-deps
"$PY" -m pip install -q --no-deps lightning pytorch-lightning torchmetrics accelerate
# their requirements other than torch
"$PY" -m pip install -q "fsspec[http]" "lightning-utilities>=0.15.3" psutil pyyaml packaging tqdm typing-extensions \
    huggingface_hub safetensors
# loggers, type checker, notebook runner (none requires torch)
"$PY" -m pip install -q tensorboard wandb mypy nbclient nbformat ipykernel

after="$(torch_id)"
if [ "$after" != "$before" ]; then
  echo "torch changed from '$before' to '$after'" >&2; exit 1
fi
echo "torch still $after; lightning, accelerate, tensorboard, wandb, mypy and nbclient installed"
