#!/usr/bin/env bash
# One GPU lease, one command: train the default model's stage 2 with our prior and, side by
# side on the same GPU, the "without prior" ablation under the same budget; then the GPU
# inference benchmark. What comes back (at most 8 files of 16 MiB):
#   $OUT/session.txt, $OUT/device.txt, $OUT/train_image.log, $OUT/train_none.log, $OUT/gpu_bench.md, and
#   $OUT/image.safetensors, $OUT/none.safetensors: each trained model as its difference from
#   the bundled one (rebuild with `python scripts/model_delta.py apply DELTA
#   gcpcolor/assets/default_model TARGET`).
#
#   python scripts/pack_training_photos.py .gpudata ... --every 2 --short-side 176   # see scripts/gpu_train_default.sh
#   mkdir -p .gpupack && tar -czf .gpupack/gpudata.tar.gz -C .gpudata .   # one file travels best
#   OUT=/tmp/out IMAGE_SIZE=160 FRESH_STAGE2=1 LR=5e-4 WARMUP=200 bash scripts/gpu_session.sh
#
# FRESH_STAGE2=1 (docs/training.md) trains both runs' networks from scratch on the bundled prior,
# so they get the same budget without a "without prior" starting model to carry.
#
# On a leased machine: call it as is, carrying .gpupack; the `python` on that machine's PATH is
# the one that holds PyTorch (a symlink to it loses its virtual environment, so none is made).
# The working tree and the archive together must stay under the lease's 64 MiB: every second
# photo at quality 90 and a 176 px short side is 35 MB, every third at 192 px 25.5 MiB (lower quality casts the models
# yellow-green: scripts/pack_training_photos.py). Run twice on an H100 with the whole set at
# WebP quality 52, both times worse than the CPU runs (docs/training-log.md).
#
# Environment: PACKED (.gpupack/gpudata.tar.gz: the packed folder or such an archive of it), TRAIN_BUDGET_S (300),
# STEPS (3000: a guess that each run's speed probe replaces), BATCH (64), WORKERS (7 per run),
# NONE_START (.gpupack/none_start.safetensors: the "without prior" model that the ablation
# fine-tunes, as a delta from the bundled model, so that both runs go on from models trained
# with the same budget; where absent, it starts from the bundled model's networks, all of whose
# layers but the one that reads the reference both guidances share; FRESH_STAGE2=1 ignores it),
# BENCH_BUDGET_S (100; 0 skips the benchmark), DEVICE (cuda; cpu checks the script),
# BENCH_MODELS / BENCH_BATCHES / BENCH_MODES (passed to scripts/gpu_bench.sh), RUNS ("image none": which runs
# train; "none" alone checks the ablation quickly).
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder that receives the results}"
PACKED=${PACKED:-.gpupack/gpudata.tar.gz}; TRAIN_BUDGET_S=${TRAIN_BUDGET_S:-300}; STEPS=${STEPS:-3000}; BATCH=${BATCH:-64}
WORKERS=${WORKERS:-7}; BENCH_BUDGET_S=${BENCH_BUDGET_S:-100}; DEVICE=${DEVICE:-cuda}; RUNS=${RUNS:-image none}
WORK=${WORK:-/tmp/gcpcolor_gpu_session}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$WORK"
start=$SECONDS
python -c "import torch" || { echo "the python on PATH has no torch" >&2; exit 1; }
{ python -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)"
  nproc; } > "$OUT/session.txt"

# The frozen ImageNet backbone as the bundled model stores it, where the pinned weights package
# (not installed on a bare GPU machine) would otherwise provide it.
python - "$WORK/efficientnet_lite0.pth" <<'PY' || exit 1
import sys
import torch
from safetensors.torch import load_file
prefix = "colorization_net.backbone."
weights = load_file("gcpcolor/assets/default_model/model.safetensors")
torch.save({k[len(prefix):]: v.float() for k, v in weights.items() if k.startswith(prefix)}, sys.argv[1])
PY
export GCPCOLOR_EFFICIENTNET_LITE0="$WORK/efficientnet_lite0.pth"
NONE_START=${NONE_START:-.gpupack/none_start.safetensors}
none_start=gcpcolor/assets/default_model
if [ -f "$NONE_START" ]; then
    python scripts/model_delta.py apply "$NONE_START" gcpcolor/assets/default_model "$WORK/none_start" || exit 1
    none_start="$WORK/none_start"
fi
if [ -f "$PACKED" ]; then
    mkdir -p "$WORK/photos" && tar -xzf "$PACKED" -C "$WORK/photos" || exit 1
    PACKED="$WORK/photos"
fi

for guidance in $RUNS; do
    # two trainings and their loaders share the CPU cores: few threads each, no oversubscription
    start_from=gcpcolor/assets/default_model; [ "$guidance" = none ] && start_from=$none_start
    OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} OUT="$WORK/$guidance" GUIDANCE=$guidance STEPS=$STEPS BATCH=$BATCH WORKERS=$WORKERS DEVICE=$DEVICE START_FROM=$start_from \
        BUDGET_S=$TRAIN_BUDGET_S bash scripts/gpu_train_default.sh "$PACKED" > "$OUT/train_$guidance.log" 2>&1 &
done
wait
echo "training took $((SECONDS - start)) s" >> "$OUT/session.txt"
for guidance in $RUNS; do
    [ -f "$WORK/$guidance/default_model/model.safetensors" ] &&
        python scripts/model_delta.py make "$WORK/$guidance/default_model" gcpcolor/assets/default_model \
            "$OUT/$guidance.safetensors" >> "$OUT/train_$guidance.log" 2>&1
done

[ "$BENCH_BUDGET_S" -gt 0 ] && OUT="$OUT" DEVICE=$DEVICE BUDGET_S=$BENCH_BUDGET_S MODELS=${BENCH_MODELS:-paper,default} \
    BATCHES=${BENCH_BATCHES:-1,8,32,64} MODES=${BENCH_MODES:-fp32,bf16,compile} bash scripts/gpu_bench.sh
echo "session took $((SECONDS - start)) s" >> "$OUT/session.txt"
