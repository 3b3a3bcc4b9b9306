#!/usr/bin/env bash
# Item 6 of docs/benchmarks.md on an NVIDIA GPU with no network (under 8 minutes):
# a Stable-Diffusion-1.5-sized checkpoint with random weights, 512x512 float16.
#
#   bench/gpu.sh            # needs torch with CUDA, diffusers, transformers and the project
#   bench/gpu.sh --smoke    # tiny sizes on the CPU: checks the script end to end
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
work=${BENCH_WORK:-bench-work}
mkdir -p "$work"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export REPROGRID_HASH_CACHE="$work/file-hashes.json"
exec "$PYTHON" -m bench.gpu --workdir "$work" --out "$work/gpu.json" "$@"
