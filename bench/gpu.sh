#!/usr/bin/env bash
# The GPU benchmark in one command: bf16 compute bound, raw forward, end-to-end `fmprobe extract`, warm pixel cache
# and GPU JPEG decoding for DINOv2 ViT-B/14 at 224 and SAM ViT-B at 1024 (under 5 minutes on one H100/H200 with
# 16 cores). Needs only the repository and its install (`make install` or `pip install -e .`); random weights, no
# network. Options go to bench/gpu_bench.py (e.g. --compile, --images 20000, --workers 16; --smoke: CPU, seconds).
#
#   bash bench/gpu.sh [--compile] 2>&1 | tee gpu-bench.txt
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}"
export HF_HUB_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$PYTHON" bench/gpu_bench.py "$@"
