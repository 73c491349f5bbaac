#!/usr/bin/env bash
# Scores one bundle trained on a design's patient lists (`--split-file`) for tools/shift_rules.py:
# its validation films unshifted, and its held-out films once unshifted and once per controlled
# shift, each into OUT/<condition>/{validation,test}/predictions.csv.
#
#   bash tools/evaluate_shifts.sh runs/scratch_family_s42 runs/shift/scratch_s42 contrast:0.5 gamma:2
#
# Condition folders are named `none` and `<kind>_<level>` (e.g. `gamma_2`), the names
# tools/import_predictions.py files them under (`recipe@gamma_2/SEED=OUT/gamma_2`).
set -euo pipefail
model=$1 out=$2
shift 2
evaluate=${EVALUATE:-target/release/examples/evaluate}
data=${DATA:-../shared/data/kermany224}
score() { # holdout condition [--shift kind:level]
    local holdout=$1 condition=$2
    shift 2
    "$evaluate" --model "$model" --data "$data" --split train --holdout "$holdout" \
        --bootstrap 200 --out "$out/$condition/$holdout" "$@" > "$out/$condition/$holdout.log" 2>&1
}
mkdir -p "$out/none"
score validation none
score test none
for s in "$@"; do
    condition=${s/:/_}
    mkdir -p "$out/$condition"
    # Validation stays unshifted: the threshold is chosen on the films the bundle was tuned on.
    cp -r "$out/none/validation" "$out/$condition/validation"
    score test "$condition" --shift "$s"
done
