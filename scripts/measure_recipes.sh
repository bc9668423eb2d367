#!/usr/bin/env bash
# Does the training recipe (cdwqc or clinicadl) or augmentation change balanced accuracy?
# Builds a demo-size synthetic warehouse as scripts/demo.sh does, leaves the ratings of
# every third FLAIR subject out (those images become the unlabelled target set the
# domain branch needs), then trains SSDA on both tasks with the demo preset for each
# configuration and seed, and prints the held-out test balanced accuracy of every run
# (cdwqc report model) and the mean per configuration. Results go to docs/training.md.
#
#   MEASURE_T1=60 MEASURE_FLAIR=60 MEASURE_SEEDS="1 2 3" ./scripts/measure_recipes.sh
set -euo pipefail
cd "$(dirname "$0")/.."

CDWQC=${CDWQC:-target/release/cdwqc}
OUT=${MEASURE_DIR:-measure}
DB=$OUT/cdwqc.duckdb
W=$OUT/warehouse
N_T1=${MEASURE_T1:-60}
N_FLAIR=${MEASURE_FLAIR:-60}
N_OTHER=${MEASURE_OTHER:-10}
SEEDS=${MEASURE_SEEDS:-1 2 3}
EPOCHS=${MEASURE_EPOCHS:-6}
TASKS=${MEASURE_TASKS:-usable quality}
CONFIGS=${MEASURE_CONFIGS:-cdwqc cdwqc+augment clinicadl clinicadl+augment}
THREADS=${MEASURE_THREADS:-1}

# MEASURE_REUSE=1 keeps a warehouse and store built before (runs are replaced).
if [[ ${MEASURE_REUSE:-0} == 1 && -f $DB ]]; then
  "$CDWQC" --db "$DB" sql "delete from predictions where run_id like 'm-%';
    delete from epochs where run_id like 'm-%'; delete from splits where split_id like 'm-%';
    delete from runs where run_id like 'm-%'" --write >/dev/null
else
rm -rf "$OUT"
mkdir -p "$OUT"
"$CDWQC" synth --out "$W" --t1 "$N_T1" --flair "$N_FLAIR" --other "$N_OTHER" --raters 3 --seed 1 >/dev/null
"$CDWQC" --db "$DB" init >/dev/null
"$CDWQC" --db "$DB" import "$W" >/dev/null
for f in "$W"/derivatives/cdwqc-synth/ratings/rater?.tsv; do
  # Column 1 is the subject, column 5 the suffix: FLAIR subjects whose number is a
  # multiple of 3 stay unrated.
  awk -F'\t' '{ n = $1; gsub(/[^0-9]/, "", n) } NR == 1 || $5 != "FLAIR" || (n + 0) % 3 != 0' \
    "$f" > "$OUT/$(basename "$f")"
  "$CDWQC" --db "$DB" ratings import "$OUT/$(basename "$f")" --rater "$(basename "$f" .tsv)" >/dev/null
done
fi

# The demo preset with augmentation on (its defaults; quality runs keep artefacts below
# the moderate threshold).
sed 's/^enabled = false/enabled = true/; s/^name = "demo"/name = "demo-augment"/' \
  models/presets/demo.toml > "$OUT/demo-augment.toml"

printf 'task\tconfig\tseed\ttest_ba\tbest_epoch\tepochs\tseconds\n' > "$OUT/results.tsv"
# Seeds outermost: a measurement cut short still has every configuration per seed done.
for seed in $SEEDS; do
  for task in $TASKS; do
    for config in $CONFIGS; do
      recipe=${config%%+*}
      preset=demo
      [[ $config == *+augment ]] && preset=$OUT/demo-augment.toml
      run="m-$task-$config-$seed"
      rm -rf "models/runs/$run"
      started=$(date +%s)
      line=$("$CDWQC" --db "$DB" train --preset "$preset" --recipe "$recipe" --task "$task" \
        --method ssda --epochs "$EPOCHS" --seed "$seed" --threads "$THREADS" --device cpu \
        --run "$run" | tail -n 1)
      seconds=$(( $(date +%s) - started ))
      ba=$(echo "$line" | sed -n 's/.*test BA \([0-9.]*\|undefined\).*/\1/p')
      best=$(echo "$line" | sed -n 's/.*best epoch \([0-9]*\),.*/\1/p')
      done_epochs=$(echo "$line" | sed -n 's/.* after \([0-9]*\) epochs.*/\1/p')
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$task" "$config" "$seed" "$ba" "$best" "$done_epochs" "$seconds" \
        | tee -a "$OUT/results.tsv"
    done
  done
done

echo
echo "mean test balanced accuracy per task and configuration:"
awk -F'\t' 'NR > 1 && $4 != "undefined" { s[$1" "$2] += $4; n[$1" "$2]++; q[$1" "$2] += $4 * $4 }
  END { for (k in s) { m = s[k] / n[k]; v = q[k] / n[k] - m * m; if (v < 0) v = 0;
        printf "%-28s %.3f (sd %.3f, %d runs)\n", k, m, sqrt(v), n[k] } }' "$OUT/results.tsv" | sort
echo
echo "one run in detail: $CDWQC --db $DB report model --run m-usable-cdwqc-1"
