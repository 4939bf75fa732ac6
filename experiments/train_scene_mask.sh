#!/usr/bin/env bash
# Train the shipped mask model for real scenes on a 2-core CPU (issue 16) and assemble it with the shipped gender and
# age models. Run from the project root with ../shared/data beside it. Measured: synth 5 min, first crop pass about
# 15 min, stage 1 4 x 100 s, stage 2 5 x 130-210 s.
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
$PY -m maskage pipeline runs/scene/mask2 maskage/pretrained/gender maskage/pretrained/age --out runs/scene/pipeline \
    --dtype float16 --min-face-fraction 0.2
$PY benchmarks/scenes.py --pipeline runs/scene/pipeline --split eval
