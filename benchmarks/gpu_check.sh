#!/usr/bin/env bash
# One accelerator check of torchclip, under 5 minutes on a CUDA machine: parity (device fp32 vs CPU fp32),
# images/s and texts/s vs transformers in fp32/bf16/fp16 at batch 256 (ViT-B/32 and ViT-L/14 sizes),
# preprocessing throughput (exact CPU; device resize, bit-exact; nvJPEG + device resize) and a 5,000-JPEG folder
# end to end vs model-only.
# Runs torchclip from src/ with no install: the machine's python3 needs torch (transformers and torchvision
# are used where installed). See benchmarks/gpu_check.py for the steps.
#
#   benchmarks/gpu_check.sh                          # on a CUDA machine
#   benchmarks/gpu_check.sh --device cpu --small     # smoke test on the CPU (tests/test_image_processor_gpu_check.py runs it)
#   PYTHON=.venv/bin/python benchmarks/gpu_check.sh ...
set -euo pipefail
cd "$(dirname "$0")/.."
exec env PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" "${PYTHON:-python3}" benchmarks/gpu_check.py "$@"
