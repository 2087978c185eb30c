#!/usr/bin/env bash
# Train stage 2 of the default model (configs/default_model/default_v2_stage2.yaml) on one GPU within a fixed
# wall-clock budget and export it to $OUT/default_model, ready to copy into
# gcpcolor/assets/default_model/. The prior, encoder and correspondence come from the bundled
# model (they are not retrained); the semantic colorization network and class probe are.
#
#   python scripts/pack_training_photos.py PACKED --folder train=../shared/data/train \
#       --folder extra=../shared/data/extra --labels train=runs/v2/pseudo_classes.csv --every 3 \
#       --exclude-near-duplicates-of ../shared/data/val
#   OUT=/tmp/out bash scripts/gpu_train_default.sh PACKED
#
# PACKED is what scripts/pack_training_photos.py writes: photos, manifest.csv (all of them) and
# train_classes.csv (the prior's pseudo-class of each photo of train/, which the class probe is
# fitted to). Environment: GUIDANCE (image, the bundled model's since v10; none trains the "without
# prior" ablation), TRUTH_REFERENCE (0.5 with image guidance: the share of photos whose exemplar
# is their own colours, which teaches the network to follow its reference; truth_reference),
# STEPS (3000), BATCH (64), LR (2e-4), WARMUP (100 steps of rising rate), IMAGE_SIZE (192), BUDGET_S (wall-clock limit, 480),
# DEVICE (cuda), WORKERS (12), DEGRADE (0: the chance of old-photo damage on a crop's gray
# input, data.degrade_input; untried in a full run so far), START_FROM (the save_pretrained folder
# whose prior and, where its layout matches, colorization network the run starts from: the
# bundled model; the ablation starts from its own "without prior" model), PROBE_S (75),
# FRESH_STAGE2 (0; 1 trains the correspondence and colorization networks from scratch on
# START_FROM's prior, so that both runs of a session get the same budget: prior.fresh_stage2).
# Fitting the run to the budget: the learning rate decays linearly to 0 at the last step, so the
# step count must be what the machine does in BUDGET_S. The first PROBE_S seconds train with
# STEPS as a guess and measure the speed; the run then resumes with optim.max_steps set to the
# steps that fit in what is left (PROBE_S=0 keeps STEPS). At the budget the run stops after its
# current step with a checkpoint, and the newest checkpoint is exported; a second run with the
# same OUT resumes. FIT_CLASS_PROBE (1; 0 keeps START_FROM's class probe, as a fine-tune of the
# bundled model on the CPU does with class_probe_data=null).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder that receives the exported model}"
[ $# -eq 1 ] || { echo "usage: OUT=DIR $0 PACKED_PHOTOS_DIR" >&2; exit 2; }
PACKED=$(cd "$1" && pwd)
for needed in manifest.csv train_classes.csv train; do
    [ -e "$PACKED/$needed" ] || { echo "$PACKED/$needed is missing: make it with scripts/pack_training_photos.py" >&2; exit 2; }
done
# A fine-tune restarts Adam's moments: 60 CPU steps at 5e-4 at once moved the ablation's mean b*
# on val by +3.6, so the rate is lower and reached gradually. (The H100 runs' yellow-green cast
# itself came from over-compressed photos: scripts/pack_training_photos.py.)
GUIDANCE=${GUIDANCE:-image}; STEPS=${STEPS:-3000}; BATCH=${BATCH:-64}; LR=${LR:-2e-4}; WARMUP=${WARMUP:-100}
IMAGE_SIZE=${IMAGE_SIZE:-192}; DEGRADE=${DEGRADE:-0}; BUDGET_S=${BUDGET_S:-480}; DEVICE=${DEVICE:-cuda}; WORKERS=${WORKERS:-12}
RUN="$OUT/run"; mkdir -p "$RUN"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

START_FROM=${START_FROM:-gcpcolor/assets/default_model}; PROBE_S=${PROBE_S:-75}; FRESH_STAGE2=${FRESH_STAGE2:-0}
fresh=false; [ "$FRESH_STAGE2" = 1 ] && fresh=true
truth_reference=0; [ "$GUIDANCE" = image ] && truth_reference=${TRUTH_REFERENCE:-0.5}
probe_data=(--set "class_probe_data.root=$PACKED/train" --set "class_probe_data.labels_file=$PACKED/train_classes.csv"
            --set "class_probe_data.num_workers=$WORKERS")
[ "${FIT_CLASS_PROBE:-1}" = 0 ] && probe_data=(--set "class_probe_data=null")
RESTART_S=30  # phase 2's start (model, checkpoint, loader workers) and its final checkpoint
deadline=$((SECONDS + BUDGET_S))
train() {  # $1: seconds at most, then arguments for `gcpcolor train`
    local seconds=$1; shift
    # SIGINT makes the trainer finish its step and checkpoint (exit 130); KILL 30 s later if stuck
    timeout --signal=INT --kill-after=30 "$seconds" python -m gcpcolor train \
        --config configs/default_model/default_v2_stage2.yaml \
        --set "prior.pretrained=$START_FROM" --set "prior.fresh_stage2=$fresh" --set "guidance=$GUIDANCE" --set "truth_reference=$truth_reference" \
        "${probe_data[@]}" \
        --set "data.root=$PACKED" --set "data.labels_file=$PACKED/manifest.csv" --set "data.num_workers=$WORKERS" \
        --set "data.image_size=$IMAGE_SIZE" --set "data.degrade_input=$DEGRADE" --set "data.exclude_near_duplicates_of=null" \
        --set "optim.batch_size=$BATCH" --set "optim.lr=$LR" --set "optim.warmup_steps=$WARMUP" \
        --set "checkpoint.save_every=500" --set "checkpoint.output_dir=$RUN/stage2" \
        --set "device=$DEVICE" --set "precision=bf16" --set "logging.progress_bar=false" "$@"
}

set +e
if [ "$PROBE_S" -gt 0 ] && [ ! -e "$RUN/stage2/checkpoints/latest" ]; then
    train "$PROBE_S" --set "optim.max_steps=$STEPS" --set "logging.log_every=10" > "$RUN/probe.log" 2>&1
    cat "$RUN/probe.log"
    rm -rf "$RUN/stage2/final"  # where the probe reached STEPS: the run goes on, so its export is stale
    # the newest "step N/M ... R img/s" line: the speed once warmed up, and where the probe stopped
    last_line=$(grep -E "step [0-9]+/[0-9]+ .* img/s" "$RUN/probe.log" | tail -n 1)
    rate=$(sed -E 's/.* ([0-9.]+) img\/s.*/\1/' <<<"$last_line")
    reached=$(sed -E 's/.*step ([0-9]+)\/.*/\1/' <<<"$last_line")
    if [ -n "$last_line" ] && [ -e "$RUN/stage2/checkpoints/latest" ]; then
        STEPS=$(python -c "import sys; r, n, left, b = map(float, sys.argv[1:]); print(max(int(n) + 1, int(n + 0.95 * r * left / b)))" \
            "$rate" "$reached" "$((deadline - SECONDS - RESTART_S))" "$BATCH")
        echo "probe: $rate img/s at step $reached; the run goes to step $STEPS" >&2
    else
        echo "the probe measured no speed; the run keeps STEPS=$STEPS" >&2
    fi
fi
resume=()
[ -e "$RUN/stage2/checkpoints/latest" ] && resume=(--resume)
remaining=$((deadline - SECONDS)); [ "$remaining" -lt 1 ] && remaining=1
train "$remaining" "${resume[@]}" --set "optim.max_steps=$STEPS"
status=$?
set -e
if [ -d "$RUN/stage2/final" ]; then
    source_dir="$RUN/stage2/final"
elif [ -e "$RUN/stage2/checkpoints/latest" ]; then
    echo "training stopped at the budget (exit $status); exporting the latest checkpoint" >&2
    source_dir="$RUN/stage2"  # a run folder exports its newest checkpoint
else
    echo "training failed (exit $status) before its first checkpoint" >&2
    exit 1
fi
python - "$source_dir" "$OUT/default_model" <<'PY'
import sys
import torch
from gcpcolor.training import export_checkpoint
export_checkpoint(sys.argv[1], sys.argv[2], dtype=torch.float16)
print(f"exported {sys.argv[1]} to {sys.argv[2]}")
PY
