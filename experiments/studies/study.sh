#!/usr/bin/env bash
# One row of experiments/studies/RESULTS.md: train on the built dataset (data/synth, see experiments/studies/train_real.sh) with the study's
# short budget, assemble a pipeline, predict the eval split (450 Asian people never trained on, 3,150 photos) and
# score it. Run from the project root:
#
#   experiments/studies/study.sh ROW [key=value | TASK:key=value ...]
#
# ROW names runs/study/ROW. key=value applies to every model, TASK:key=value to one (e.g. age:folds=5). TASKS
# (default "mask gender age") picks the models to train; the others come from BASE (default runs/study/baseline),
# e.g. TASKS=age trains only the age model. TASKS=joint or TASKS=multihead trains the one-model baselines.
# Each model starts from its recipe experiments/studies/real_<task>.yaml (joint and multihead: experiments/studies/real_age.yaml) with
# STUDY's budget on top. Prints the 18-class and per-task macro F1 and the training minutes; writes
# runs/study/ROW/score.json.
set -euo pipefail
PY=${PY:-.venv/bin/python}
TASKS=${TASKS:-mask gender age}
# the study budget: 2 epochs of 3,000 photos per model (about 2 min a model on 2 cores)
STUDY=${STUDY:-epochs=2 samples_per_epoch=3000}
row=$1; shift
out=runs/study/$row
mkdir -p "$out"
start=$(date +%s)
for task in $TASKS; do
  args=()
  for a in "$@"; do
    case $a in
      *:*=*) [ "${a%%:*}" = "$task" ] && args+=("${a#*:}") ;;
      *) args+=("$a") ;;
    esac
  done
  recipe=experiments/studies/real_$task.yaml
  [ -f "$recipe" ] || recipe=experiments/studies/real_age.yaml
  # shellcheck disable=SC2086
  $PY -m maskage train "$task" "$recipe" $STUDY output_dir="$out/$task" "${args[@]}" --quiet
done
minutes=$(( ($(date +%s) - start + 30) / 60 ))
case $TASKS in
  joint|multihead) runs=("$out/$TASKS" "$out/$TASKS" "$out/$TASKS") ;;
  *)
    runs=()
    for task in mask gender age; do
      case " $TASKS " in
        *" $task "*) runs+=("$out/$task") ;;
        *) runs+=("${BASE:-runs/study/baseline}/$task") ;;
      esac
    done ;;
esac
$PY -m maskage pipeline "${runs[@]}" --out "$out/pipeline" --min-face-fraction 0.2 ${PIPELINE_ARGS:-}
$PY -m maskage submit data/synth/eval --pipeline "$out/pipeline" --out "$out/submission.csv"
$PY -m maskage evaluate "$out/submission.csv" data/synth/eval/gt.csv --json "$out/score.json" > "$out/score.txt"
head -3 "$out/score.txt"
echo "$row: training $minutes min"
