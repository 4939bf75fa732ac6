#!/usr/bin/env bash
# Train the pipeline maskage ships, in order, on a 2-core CPU (about 5 hours in all; each step is skipped when its
# output exists, so a stopped run continues). Run from the project root with ../shared/data beside it; extra
# arguments are key=value overrides for every training (e.g. device=cuda). The result is runs/shipped/pipeline;
# `benchmarks/real_masks.py`, `benchmarks/cross_source.py` and `benchmarks/scenes.py` score it against the shipped one.
set -euo pipefail
PY=${PY:-.venv/bin/python}
R=experiments/shipped
train() {  # TASK RECIPE OUTPUT [key=value ...]: train unless OUTPUT holds a model already
  local task=$1 recipe=$2 out=$3; shift 3
  [ -f "$out/model.json" ] || $PY -m maskage train "$task" "$recipe" output_dir="$out" "$@"
}

# --- data: drawn masks on every third All-Age-Faces photo (half the incorrect ones pulled down), the scenes' train
# half, the multi-source build for gender and age (UTKFace + All-Age-Faces + LFW, a fifth of each source's people
# held out)
if [ ! -f data/aafmask_lc/train/train.csv ]; then
  third=data/aaf_third && mkdir -p $third && aaf=$(cd ../shared/data/aaf && pwd)
  LC_ALL=C ls "$aaf" | LC_ALL=C sort | awk 'NR % 3 == 0' | while read -r f; do ln -sfn "$aaf/$f" "$third/$f"; done
  $PY -m maskage synth aaf=$third --out data/aafmask_lc --photos normal,mask1,incorrect_mask --seed 0 \
    --chin-share 0.5 --chin-low 1.0 --quiet
fi
[ -d data/scene_faces/train ] || $PY -m maskage scene-faces ../shared/data/facemask_scenes --out data/scene_faces/train
[ -f data/multi/train/train.csv ] || $PY -m maskage synth utkface=../shared/data/utkface aaf=../shared/data/aaf \
    lfw=../shared/data/lfw --out data/multi --photos normal,mask1,incorrect_mask --eval-fraction 0.2 --seed 0 --quiet
# the int8 calibration photos: training people of the first 1,500 faces (none of data/multi's held-out people)
[ -f data/calib/train/train.csv ] || $PY -m maskage synth utkface=../shared/data/utkface aaf=../shared/data/aaf \
    lfw=../shared/data/lfw --out data/calib --photos normal,mask1,incorrect_mask --eval-fraction 0.2 --seed 0 \
    --limit 1500 --quiet

# --- mask: EfficientNet-Lite2 from ImageNet, one run on the drawn and real masks
train mask $R/mask_lite2.yaml runs/shipped/mask "$@"

# --- gender: FaceRes fine-tuned, then twice 3 epochs more on YuNet's crops
$PY -m maskage fetch-faceres
train gender $R/gender_1_faceres.yaml runs/shipped/gender_1 "$@"
train gender $R/gender_2_yunet.yaml runs/shipped/gender_2 init_from=runs/shipped/gender_1 "$@"
train gender $R/gender_2_yunet.yaml runs/shipped/gender init_from=runs/shipped/gender_2 "$@"

# --- age: two FaceRes models (seeds 0 and 7), each trained further at 224 px, distilled into one 224 px model,
# then that model distilled into itself at 192 px
train age $R/age_1_faceres.yaml runs/shipped/age_1 "$@"
train age $R/age_1_faceres.yaml runs/shipped/age_1_s7 seed=7 epochs=6 "$@"
train age $R/age_2_224.yaml runs/shipped/age_2 init_from=runs/shipped/age_1 seed=0 "$@"
train age $R/age_2_224.yaml runs/shipped/age_2_s7 init_from=runs/shipped/age_1_s7 seed=7 "$@"
train age $R/age_2_224.yaml runs/shipped/age init_from=runs/shipped/age_2_s7 \
    teacher=runs/shipped/age_2,runs/shipped/age_2_s7 teacher_weight=0.7 lr=0.00001 epochs=2 seed=7 "$@"
train age $R/age_3_192.yaml runs/shipped/age_192 teacher=runs/shipped/age "$@"

# --- the pipeline: float16 weights, YuNet for one-face photos, the three models as int8 ONNX (7-bit weights, 8-bit
# in depthwise convolutions): gender and age calibrated on 300 photos of drawn masks, the mask model on 400 of drawn
# masks and the scenes' real train-half faces
$PY -m maskage pipeline runs/shipped/mask runs/shipped/gender runs/shipped/age_192 --out runs/shipped/pipeline \
    --dtype float16 --min-face-fraction 0.2 --portrait yunet
$PY -m maskage export runs/shipped/pipeline --int8 gender age --calibration data/calib/train/images \
    --calibration-limit 300
$PY -m maskage export runs/shipped/pipeline --tasks mask --int8 mask --calibration data/calib/train/images \
    data/scene_faces/train --calibration-limit 400
echo "pipeline in runs/shipped/pipeline"
