#!/usr/bin/env bash
# Train the pipeline maskage ships, on a 2-core CPU: build the dataset from UTKFace, train the three recipes,
# assemble a float16 pipeline. Run from the project root with ../shared/data beside it. Extra arguments are
# key=value overrides for all three trainings (e.g. device=cuda). Measured times: README.md, "Training on real faces".
set -euo pipefail
PY=${PY:-.venv/bin/python}
if [ ! -f data/synth/train/train.csv ]; then
  # half the training people in 384x512 scenes, so that gender and age learn faces with background around them too
  # (the shipped gender model's build; its mask and age models predate the option)
  $PY -m maskage synth ../shared/data/utkface --out data/synth --eval-race Asian --eval-fraction 0.2 --seed 0 \
    --train-scenes 0.5
fi
for task in mask gender age; do
  /usr/bin/time -f "$task: %e s" $PY -m maskage train $task experiments/studies/real_$task.yaml "$@"
done
$PY -m maskage pipeline runs/real/mask runs/real/gender runs/real/age --out runs/real/pipeline --dtype float16 --min-face-fraction 0.2
echo "pipeline in runs/real/pipeline; to ship it: rm -rf maskage/pretrained/{mask,gender,age} && cp -r runs/real/pipeline/* maskage/pretrained/"
