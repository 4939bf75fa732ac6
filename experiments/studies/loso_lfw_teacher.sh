#!/usr/bin/env bash
# Experiment (2026-12-04, docs/measurements.md): leave-one-source-out age without UTKFace
# (experiments/studies/loso.sh's age step: AAF only, 4 epochs straight at 224 px from FaceRes) plus LFW's training people
# with FaceRes-teacher ages (first: .venv/bin/python experiments/studies/lfw_teacher_ages.py data/multi runs/lfw_teacher.csv;
# rows kept where the teacher is >= 0.6 sure of the group), scored on UTKFace's held-out people. The 2026-12-03
# run without them: 0.768 bare / 0.671 masked.
set -euo pipefail
PY=.venv/bin/python
$PY -m maskage train age experiments/shipped/age_1_faceres.yaml output_dir=runs/loso_lfw/age "datasets=[aaf]" epochs=4 \
  portrait=yunet input_size=224 crop_size=224 pseudo_labels=runs/lfw_teacher.csv pseudo_threshold=0.6 save_epochs=true
for e in 3 4; do
  $PY -m maskage pipeline maskage/pretrained/mask maskage/pretrained/gender runs/loso_lfw/age/epoch_$e \
    --out runs/loso_lfw/pipeline$e --dtype float16 --min-face-fraction 0.2 --portrait yunet
done
MASKAGE_INT8=0 $PY benchmarks/cross_source.py --data data/multi --no-peer --pipeline shipped=maskage/pretrained \
  --pipeline lfw3=runs/loso_lfw/pipeline3 --pipeline lfw4=runs/loso_lfw/pipeline4
