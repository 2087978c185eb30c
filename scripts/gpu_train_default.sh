#!/usr/bin/env bash
# Train stage 2 of the default model (configs/default_model/default_v2_stage2.yaml) on one GPU within a fixed
# wall-clock budget and export it to $OUT/default_model, ready to copy into
# gcpcolor/assets/default_model/. The prior, encoder and correspondence come from the bundled
# model (they are not retrained); the semantic colorization network and class probe are.
#
#   OUT=/tmp/out bash scripts/gpu_train_default.sh PHOTOS_DIR [MORE_PHOTO_DIRS...]
#
# PHOTOS_DIR holds ../shared/data/train (its pseudo-classes are recomputed: the class probe is
# fitted on them); further folders add unlabelled photos. Environment: STEPS (default 3000),
# BATCH (64), BUDGET_S (wall-clock limit of training, 480), DEVICE (cuda), WORKERS (12).
# A second run with the same OUT resumes where the first stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder that receives the exported model}"
[ $# -ge 1 ] || { echo "usage: OUT=DIR $0 PHOTOS_DIR [MORE_PHOTO_DIRS...]" >&2; exit 2; }
STEPS=${STEPS:-3000}; BATCH=${BATCH:-64}; BUDGET_S=${BUDGET_S:-480}; DEVICE=${DEVICE:-cuda}; WORKERS=${WORKERS:-12}
RUN="$OUT/run"; mkdir -p "$RUN"

python - "$RUN" "$@" <<'PY'
import sys
from pathlib import Path
from gcpcolor.image_io import find_images
from gcpcolor.pseudo_classes import cluster_photos, write_labels_csv

run, labelled, *others = sys.argv[1:]
if not (Path(run) / "pseudo_classes.csv").is_file():
    files = [str(p) for p, _ in find_images([labelled])]
    write_labels_csv(Path(run) / "pseudo_classes.csv", labelled, cluster_photos(files, 16, seed=0))
with open(Path(run) / "manifest.csv", "w") as manifest:
    manifest.write("file,class\n")
    for folder in [labelled, *others]:
        for path, _ in find_images([folder]):
            manifest.write(f"{Path(path).resolve()},-1\n")
PY

resume=()
[ -e "$RUN/stage2/checkpoints/latest" ] && resume=(--resume)
set +e
timeout --signal=INT "$BUDGET_S" gcpcolor train --config configs/default_model/default_v2_stage2.yaml "${resume[@]}" \
    --set "class_probe_data.root=$1" --set "class_probe_data.labels_file=$RUN/pseudo_classes.csv" \
    --set "data.root=$RUN" --set "data.labels_file=$RUN/manifest.csv" --set "data.num_workers=$WORKERS" \
    --set "optim.batch_size=$BATCH" --set "optim.max_steps=$STEPS" --set "checkpoint.save_every=200" \
    --set "checkpoint.output_dir=$RUN/stage2" --set "device=$DEVICE" --set "precision=bf16" \
    --set "logging.progress_bar=false"
status=$?
set -e
if [ -d "$RUN/stage2/final" ]; then
    source_dir="$RUN/stage2/final"
else
    # the budget ran out first: export the newest checkpoint (resume later to finish the schedule)
    echo "training stopped at the budget (exit $status); exporting the latest checkpoint" >&2
    source_dir="$RUN/stage2/checkpoints/latest"
fi
python - "$source_dir" "$OUT/default_model" <<'PY'
import sys
import torch
from gcpcolor.training import export_checkpoint
export_checkpoint(sys.argv[1], sys.argv[2], dtype=torch.float16)
print(f"exported {sys.argv[1]} to {sys.argv[2]}")
PY
