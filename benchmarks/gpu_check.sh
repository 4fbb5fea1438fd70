#!/usr/bin/env bash
# The one prepared check of liverctl's GPU path (issue 25): see benchmarks/gpu_check.py and docs/gpu.md.
#
#   pip install -e ".[test]"          # torch with CUDA, MONAI, nibabel, nnunetv2
#   bash benchmarks/gpu_check.sh      # from the repository root; prints one markdown table
#
# Exit status: 0 every check ok, 1 a check failed, 2 no CUDA device (nothing checked),
# 124 stopped at the 8-minute budget. Extra arguments go to gpu_check.py (--device cuda:1).
set -u
cd "$(dirname "$0")/.." || exit 1
PYTHON="${PYTHON:-python}"
exec timeout --signal=INT --kill-after=20 480 "$PYTHON" benchmarks/gpu_check.py "$@"
