#!/usr/bin/env bash
# Train the shipped mask model for real scenes on a 2-core CPU (issue 16) and assemble it with the shipped gender and
# age models. Run from the project root with ../shared/data beside it. Measured: synth 5 min, first crop pass about
# 15 min, stage 1 4 x 100 s, stage 2 5 x 130-210 s; stage 3: synth about 8 min, crops 10 min, 3 x 180-280 s.
set -euo pipefail
PY=${PY:-.venv/bin/python}
[ -f data/aafmask/train/train.csv ] || $PY -m maskage synth aaf=../shared/data/aaf --out data/aafmask \
    --photos normal,mask1,incorrect_mask --eval-fraction 0.2 --seed 0 --quiet
[ -d data/scene_faces/train ] || $PY -m maskage scene-faces ../shared/data/facemask_scenes --out data/scene_faces/train
# stage 1 starts from the mask model shipped before (trained on UTKFace's drawn masks, MaskedFace-Net and RMFD)
[ -d runs/scene/base_mask ] || { mkdir -p runs/scene && git archive 02582bb maskage/pretrained/mask | tar -x -C runs/scene \
    && mv runs/scene/maskage/pretrained/mask runs/scene/base_mask && rm -r runs/scene/maskage; }
$PY -m maskage train mask experiments/scene_mask.yaml "$@"
$PY -m maskage train mask experiments/scene_mask2.yaml "$@"
# stage 3 (tenth session): every third AAF photo (C-sorted names), half the incorrect masks drawn pulled down under
# the chin, crops shifted down (scene_mask_shift.yaml)
if [ ! -f data/aafmask_lc/train/train.csv ]; then
  third=data/aaf_third && mkdir -p $third && aaf=$(cd ../shared/data/aaf && pwd)
  LC_ALL=C ls "$aaf" | LC_ALL=C sort | awk 'NR % 3 == 0' | while read -r f; do ln -sfn "$aaf/$f" "$third/$f"; done
  $PY -m maskage synth aaf=$third --out data/aafmask_lc --photos normal,mask1,incorrect_mask --seed 0 \
    --chin-share 0.5 --chin-low 1.0 --quiet
fi
$PY -m maskage train mask experiments/scene_mask_shift.yaml init_from=runs/scene/mask2 "$@"
$PY -m maskage pipeline runs/scene/mask_shift maskage/pretrained/gender maskage/pretrained/age --out runs/scene/pipeline \
    --dtype float16 --min-face-fraction 0.2
$PY benchmarks/scenes.py --pipeline runs/scene/pipeline --split eval
