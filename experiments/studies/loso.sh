#!/usr/bin/env bash
# Leave-one-source-out runs of the shipped gender and age recipes (faceres_*.yaml) on the multi-source build:
# each trains without one source, and benchmarks/cross_source.py then scores it on that source's held-out people:
#   .venv/bin/python benchmarks/cross_source.py --data data/multi --no-peer \
#       --pipeline no_aaf=runs/loso/no_aaf/pipeline --pipeline no_utkface=runs/loso/no_utkface/pipeline
# Shorter than the shipped runs to fit a 2-core machine's day (GENDER_EPOCHS, AGE_EPOCHS; one age model trained straight
# at the shipped 224 px, AGE_SIZE, not the shipped 160 px run + 224 px pair + distillation); trained on YuNet's crops
# and assembled with the shipped detector, as the shipped models are (YuNet for one-face photos).
set -euo pipefail
PY=${PY:-.venv/bin/python}
OUT=${LOSO_DIR:-runs/loso}
for left in aaf utkface; do
  keep=$(echo utkface aaf lfw | tr ' ' '\n' | grep -v "^$left$" | paste -sd, -)
  $PY -m maskage train gender experiments/shipped/gender_1_faceres.yaml output_dir=$OUT/no_$left/gender \
    "datasets=[$keep]" epochs=${GENDER_EPOCHS:-8} portrait=yunet "$@"
  agekeep=$(echo "$keep" | tr ',' '\n' | grep -v '^lfw$' | paste -sd, -)
  size=${AGE_SIZE:-224}
  $PY -m maskage train age experiments/shipped/age_1_faceres.yaml output_dir=$OUT/no_$left/age \
    "datasets=[$agekeep]" epochs=${AGE_EPOCHS:-4} portrait=yunet input_size=$size crop_size=$size "$@"
  $PY -m maskage pipeline maskage/pretrained/mask $OUT/no_$left/gender $OUT/no_$left/age \
    --out $OUT/no_$left/pipeline --dtype float16 --min-face-fraction 0.2 --portrait yunet
done
