#!/usr/bin/env bash
# One accelerator check of torchclip, under 5 minutes on a CUDA machine: parity (device fp32 vs CPU fp32),
# images/s and texts/s vs transformers in fp32/bf16/fp16 at batch 256 (ViT-B/32 and ViT-L/14 sizes),
# preprocessing throughput (exact CPU; device resize, bit-exact; nvJPEG + device resize) and a 5,000-JPEG folder
# end to end vs model-only. See benchmarks/gpu_check.py for the steps.
#
# Runs torchclip from src/ with no install. The machine's python3 needs torch, numpy, Pillow, numba, pyarrow,
# safetensors, regex, tqdm and ftfy (transformers and torchvision are used where installed). A machine that
# cannot reach PyPI and lacks some of them gets them as wheels in .whl/, fetched beforehand on a machine that
# can (`benchmarks/gpu_check.sh --fetch-wheels`, for the Python and platform named below); they are installed
# into a scratch folder here, never into the machine's own Python.
#
#   benchmarks/gpu_check.sh                          # on a CUDA machine
#   benchmarks/gpu_check.sh --device cpu --small     # smoke test on the CPU (tests/test_image_processor_gpu_check.py runs it)
#   benchmarks/gpu_check.sh --fetch-wheels           # here: ftfy and wcwidth wheels into .whl/ (CPython 3.12, x86_64)
#   PYTHON=.venv/bin/python benchmarks/gpu_check.sh ...
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
if [[ "${1:-}" == "--fetch-wheels" ]]; then
    exec "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl ftfy==6.3.1 wcwidth==0.9.5
fi
if [[ -d .whl ]] && ! "$python" -c "import ftfy" 2>/dev/null; then
    site="$(mktemp -d)"
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl
    PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
exec env PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" "$python" benchmarks/gpu_check.py "$@"
