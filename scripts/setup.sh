#!/usr/bin/env bash
# Set up medseg in a virtual environment (./.venv, or $MEDSEG_VENV) for use and development.
#
# Where no NVIDIA GPU is present, PyTorch's CPU build is installed first (a plain
# `pip install torch` on Linux pulls gigabytes of CUDA libraries that such a machine
# cannot use). With a GPU, pip's default CUDA build is kept. Users who prefer their
# own environment can simply `pip install -e .` (or `pip install medseg`) instead.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${MEDSEG_VENV:-.venv}
python=${PYTHON:-python3}
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip)

if ! "$venv/bin/python" -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: NVIDIA GPU found, installing PyTorch's default (CUDA) build"
  else
    echo "setup: no NVIDIA GPU, installing PyTorch's CPU build"
    # A local CPU wheel (machines that provide one via pip's find-links), else PyTorch's CPU index.
    "${pip[@]}" install "torch==2.13.0+cpu" 2>/dev/null \
      || "${pip[@]}" install torch --index-url https://download.pytorch.org/whl/cpu
  fi
fi
"${pip[@]}" install -e ".[test]"
# rt-utils: a test-only reference reader/writer of RTSTRUCT (tests/io/test_rtstruct_rtutils.py); its
# declared opencv-python needs libGL, so it goes in without dependencies beside opencv-python-headless.
"${pip[@]}" install --no-deps "rt-utils==1.2.7"
# nnU-Net v2: a test-only reference (tests/nnunet_reference.py trains tiny models with nnU-Net's own
# commands, and medseg's predictions with nnU-Net models are checked against nnU-Net's). Both packages go
# in without dependencies: dynamic-network-architectures names timm, which pulls torchvision and, with it,
# a CUDA build of torch (gigabytes) over our CPU one; the plain U-Nets nnU-Net plans need neither (only its
# Primus trainers import timm). The second line is what nnU-Net's planning, training and prediction import
# of its other requirements (checked with PYTHONPROFILEIMPORTTIME; einops, graphviz and yacs are not).
"${pip[@]}" install --no-deps "nnunetv2==2.8.1" "dynamic-network-architectures==0.4.4"
"${pip[@]}" install "acvl-utils>=0.2.6,<0.3" "batchgenerators>=0.25.1" "batchgeneratorsv2>=0.3.2" "blosc2>=3.3.2" \
  imagecodecs matplotlib pandas requests "scikit-image>=0.19.3" scikit-learn seaborn tifffile tqdm
echo "setup: done; run medseg as $venv/bin/medseg (or activate: . $venv/bin/activate)"
