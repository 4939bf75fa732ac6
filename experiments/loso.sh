#!/usr/bin/env bash
# Leave-one-source-out runs of the shipped gender and age recipes (faceres_*.yaml) on the multi-source build:
# each trains without one source, and benchmarks/cross_source.py then scores it on that source's held-out people.
# Shorter than the shipped runs (gender 4 epochs, age 5: the shipped runs' best epochs) to fit a 2-core session.
set -euo pipefail
PY=${PY:-.venv/bin/python}
for left in aaf utkface; do
  keep=$(echo utkface aaf lfw | tr ' ' '\n' | grep -v "^$left$" | paste -sd, -)
  $PY -m maskage train gender experiments/faceres_gender.yaml output_dir=runs/loso/no_$left/gender \
    "datasets=[$keep]" epochs=4 "$@"
  agekeep=$(echo "$keep" | tr ',' '\n' | grep -v '^lfw$' | paste -sd, -)
  $PY -m maskage train age experiments/faceres_age.yaml output_dir=runs/loso/no_$left/age \
    "datasets=[$agekeep]" epochs=5 "$@"
  $PY -m maskage pipeline maskage/pretrained/mask runs/loso/no_$left/gender runs/loso/no_$left/age \
    --out runs/loso/no_$left/pipeline --dtype float16 --min-face-fraction 0.2
done
