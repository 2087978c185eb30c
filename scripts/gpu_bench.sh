#!/usr/bin/env bash
# The whole GPU benchmark in at most 5 minutes: images/s of the network part at 256² for the
# paper-size model (random weights) and the bundled default model, batch 1/8/32/64, fp32, bf16
# and torch.compile (benchmarks/bench_gpu_throughput.py). The markdown table goes to
# $OUT/gpu_bench.md (and stdout).
#
#   OUT=/tmp/out bash scripts/gpu_bench.sh
#
# Environment: DEVICE (cuda; cpu checks the script without a GPU), MODELS (paper,default),
# BATCHES (1,8,32,64), MODES (fp32,bf16,compile; compile rows run last), BUDGET_S (240: no new row starts after it;
# the rows left are listed as not run), MIN_SECONDS (1.5: timing per row). A hard limit of
# BUDGET_S + 50 s ends a stuck run.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder that receives gpu_bench.md}"
DEVICE=${DEVICE:-cuda}; MODELS=${MODELS:-paper,default}; BATCHES=${BATCHES:-1,8,32,64}
MODES=${MODES:-fp32,bf16,compile}; BUDGET_S=${BUDGET_S:-240}; MIN_SECONDS=${MIN_SECONDS:-1.5}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true; } > "$OUT/device.txt"
timeout --signal=INT "$((${BUDGET_S%.*} + 50))" python benchmarks/bench_gpu_throughput.py \
    --device "$DEVICE" --models "$MODELS" --batches "$BATCHES" --modes "$MODES" \
    --budget-s "$BUDGET_S" --min-seconds "$MIN_SECONDS" --output "$OUT/gpu_bench.md"
