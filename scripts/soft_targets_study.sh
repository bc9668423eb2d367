#!/usr/bin/env bash
# Hard labels against soft targets from the same noisy raters (docs/latent-truth.md):
# one synthetic pool warehouse (`cdwqc synth`, simulated raters) trains the usable task
# three ways on the same split and seed, `--labels majority`, `--labels dawid-skene` (the
# latent truth's most probable class) and `--labels dawid-skene --soft-targets` (its
# posterior), and each model is scored on a test warehouse of other subjects against
# the generator's ground truth (no rater's noise in the score). As in a hospital, each
# image is rated by only SOFT_PER_IMAGE of the raters (2 of 3 by default, in turn), so
# that where two disagree the latent truth is uncertain.
#
#   ./scripts/soft_targets_study.sh
#   SOFT_SEEDS="1 2 3 4 5" SOFT_EPOCHS=8 SOFT_PRESET=demo SOFT_RATERS=3 SOFT_PER_IMAGE=2 SOFT_FLAIR=120 \
#     SOFT_DIR=soft-targets ./scripts/soft_targets_study.sh
#
# The table goes to $SOFT_DIR/results.md (balanced accuracy and 95% bootstrap CI per
# run, mean per mode), the scores to $SOFT_DIR/results.tsv; a rerun skips what is done.
set -euo pipefail
cd "$(dirname "$0")/.."
CDWQC=${CDWQC:-target/release/cdwqc}
[ -x "$CDWQC" ] || { echo "$CDWQC is missing: run scripts/setup.sh (or cargo build --release)" >&2; exit 1; }
CDWQC=$(realpath "$CDWQC")
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
OUT=${SOFT_DIR:-soft-targets}
SEEDS=${SOFT_SEEDS:-1 2 3 4 5}
EPOCHS=${SOFT_EPOCHS:-8}
PRESET=${SOFT_PRESET:-demo}
RATERS=${SOFT_RATERS:-3}
PER_IMAGE=${SOFT_PER_IMAGE:-2}
N_T1=${SOFT_T1:-60}
N_FLAIR=${SOFT_FLAIR:-120}
N_TEST=${SOFT_TEST:-80}
MODES=${SOFT_MODES:-majority hard soft}
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
mkdir -p "$OUT"
if [ ! -f "$OUT/test.duckdb" ]; then
  step "pool warehouse ($N_T1 T1w, $N_FLAIR FLAIR, $RATERS raters) and test warehouse ($N_TEST FLAIR)"
  rm -rf "$OUT/pool" "$OUT/test" "$OUT"/*.duckdb
  "$CDWQC" synth --out "$OUT/pool" --t1 "$N_T1" --flair "$N_FLAIR" --other 0 --raters "$RATERS" --seed 15 | tail -n 1
  "$CDWQC" synth --out "$OUT/test" --t1 0 --flair "$N_TEST" --other 0 --raters 1 --seed 16 | tail -n 1
  "$CDWQC" --db "$OUT/pool.duckdb" init >/dev/null
  "$CDWQC" --db "$OUT/pool.duckdb" import "$OUT/pool" --no-iqm | tail -n 1
  # Rater r rates data row n when (n - r + 1) mod RATERS < PER_IMAGE (every rater file
  # lists the images in the same order).
  for f in "$OUT"/pool/derivatives/cdwqc-synth/ratings/rater[0-9].tsv; do
    r=$(basename "$f" .tsv); r=${r#rater}
    awk -F'\t' -v r="$r" -v n="$RATERS" -v k="$PER_IMAGE" \
      'NR == 1 || ((NR - 2 - r + 1) % n + n) % n < k' "$f" > "$OUT/rated_$(basename "$f")"
    "$CDWQC" --db "$OUT/pool.duckdb" ratings import "$OUT/rated_$(basename "$f")" \
      --rater "rater$r" | tail -n 1
  done
  "$CDWQC" --db "$OUT/test.duckdb.tmp" init >/dev/null
  "$CDWQC" --db "$OUT/test.duckdb.tmp" import "$OUT/test" --no-iqm | tail -n 1
  # The generator's truth of usability, as rater `truth`: the only labels the test
  # store holds.
  # (Rating files give no grade to a rejected image; the generator's table does.)
  awk -F'\t' -v OFS='\t' '{ if (NR > 1 && $7 == 0) { $11 = ""; $12 = ""; $13 = ""; $14 = "" }
    print $1, $2, $3, $4, $5, $6, $7, $8, $11, $12, $13, $14 }' \
    "$OUT/test/derivatives/cdwqc-synth/ground_truth.tsv" > "$OUT/truth.tsv"
  "$CDWQC" --db "$OUT/test.duckdb.tmp" ratings import "$OUT/truth.tsv" --rater truth | tail -n 1
  mv "$OUT/test.duckdb.tmp" "$OUT/test.duckdb"
fi
results=$OUT/results.tsv
[ -f "$results" ] || printf 'mode\tseed\tbalanced_accuracy\tci_low\tci_high\n' > "$results"
for seed in $SEEDS; do
  for mode in $MODES; do
    if grep -q "^$mode	$seed	" "$results"; then continue; fi
    run=soft-$mode-s$seed
    case $mode in
      majority) labels=(--labels majority) ;;
      hard) labels=(--labels dawid-skene) ;;
      soft) labels=(--labels dawid-skene --soft-targets) ;;
      *) echo "unknown mode $mode (majority, hard, soft)" >&2; exit 2 ;;
    esac
    step "$mode, seed $seed"
    "$CDWQC" --db "$OUT/pool.duckdb" train --preset "$PRESET" --task usable --method target-only \
      --epochs "$EPOCHS" --seed "$seed" --threads 1 --device cpu --run "$run" "${labels[@]}" \
      > "$OUT/$run.log" 2>&1 || { echo "training $run failed: see $OUT/$run.log" >&2; exit 1; }
    "$CDWQC" --db "$OUT/pool.duckdb" model export --run "$run" --name "$run" --out "$OUT/models" --force >/dev/null
    "$CDWQC" --db "$OUT/test.duckdb" infer --model "$OUT/models/$run" --threads 1 --device cpu >/dev/null
    "$CDWQC" --db "$OUT/test.duckdb" report model --run "model:$run" --set all --against truth \
      --json --bootstrap 1000 > "$OUT/report_$run.json"
    "$PY" - "$OUT/report_$run.json" "$mode" "$seed" >> "$results" <<'PYEOF'
import json, sys
r = json.load(open(sys.argv[1]))
ba = r["overall"]["balanced_accuracy"]
lo, hi = ba.get("ci95") or (None, None)
fmt = lambda v: "" if v is None else f"{v:.4f}"
print("\t".join(sys.argv[2:4] + [fmt(ba.get("value")), fmt(lo), fmt(hi)]))
PYEOF
    tail -n 1 "$results"
  done
done
"$PY" - "$results" <<'PYEOF' | tee "$OUT/results.md"
import csv, sys
from collections import defaultdict
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
by = defaultdict(dict)
for r in rows:
    by[r["mode"]][int(r["seed"])] = r
seeds = sorted({int(r["seed"]) for r in rows})
names = {"majority": "majority vote", "hard": "Dawid-Skene, most probable class",
         "soft": "Dawid-Skene posterior (soft targets)"}
print("| labels | mean | " + " | ".join(f"seed {s} [95% CI]" for s in seeds) + " |")
print("|---|---|" + "---|" * len(seeds))
for mode, runs in by.items():
    vals = [float(runs[s]["balanced_accuracy"]) for s in seeds if s in runs]
    cells = [f"{float(runs[s]['balanced_accuracy']):.3f} [{runs[s]['ci_low']}, {runs[s]['ci_high']}]"
             if s in runs else "" for s in seeds]
    print(f"| {names.get(mode, mode)} | {sum(vals) / len(vals):.3f} | " + " | ".join(cells) + " |")
PYEOF
