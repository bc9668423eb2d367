#!/usr/bin/env bash
# The paper's few-label scenario, measured on the external test set
# (docs/few-label-study.md): source = labelled synthetic T1w images (`cdwqc synth`),
# target = the external warehouse's FLAIR-named images (scripts/external_warehouse.py,
# another simulator) of which only a fraction of subjects carries a label. For each
# fraction and seed the four methods (ssda, target-only, finetune, source-only) train on
# the same labelled images, and so does `shipped`: finetune starting from the shipped
# pretrained model (`cdwqc train --init-model`). In a copy of each store the truth of
# every external image is then added as rater `truth`, the shipped model predicts as is
# and adapted (no label), and `cdwqc report compare --against truth --set unseen` scores
# each run on the images it did not learn from, every method paired against target-only.
#
#   ./scripts/few_label_study.sh
#   STUDY_FRACTIONS="10 25" STUDY_SEEDS="1 2 3" STUDY_TASK=usable STUDY_EPOCHS=10 \
#     STUDY_JOBS=2 EXT_DIR=external ./scripts/few_label_study.sh
#
# The external warehouse is reused from $EXT_DIR (scripts/external_eval.sh builds it)
# or generated here. Each (fraction, seed) gets its own store under $STUDY_DIR, copied
# from a base store holding both warehouses and the source ratings. The table goes to
# $STUDY_DIR/results.md, each comparison to compare_<fraction>_<seed>.json.
set -euo pipefail
cd "$(dirname "$0")/.."
CDWQC=${CDWQC:-target/release/cdwqc}
[ -x "$CDWQC" ] || { echo "$CDWQC is missing: run scripts/setup.sh (or cargo build --release)" >&2; exit 1; }
CDWQC=$(realpath "$CDWQC")
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
EXT=${EXT_DIR:-external}
OUT=${STUDY_DIR:-few-label}
FRACTIONS=${STUDY_FRACTIONS:-10 25}
SEEDS=${STUDY_SEEDS:-1 2 3}
TASK=${STUDY_TASK:-usable}
EPOCHS=${STUDY_EPOCHS:-10}
PRESET=${STUDY_PRESET:-pretrained}
JOBS=${STUDY_JOBS:-2}
METHODS=${STUDY_METHODS:-ssda target-only finetune source-only shipped}
SHIPPED=${STUDY_SHIPPED:-cdwqc-flair-usable}
N_SOURCE=${STUDY_SOURCE:-120}
TRUTH=$EXT/warehouse/derivatives/external-truth/ratings_truth.tsv
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if [ ! -f "$TRUTH" ]; then
  step "building the external warehouse in $EXT/warehouse (${EXT_N:-150} images, seed ${EXT_SEED:-7})"
  mkdir -p "$EXT"
  "$PY" scripts/external_warehouse.py --out "$EXT/warehouse" --n "${EXT_N:-150}" --seed "${EXT_SEED:-7}"
fi

mkdir -p "$OUT"
BASE=$OUT/base.duckdb
if [ ! -f "$BASE" ]; then
  step "source warehouse: $N_SOURCE synthetic T1w images, three simulated raters"
  rm -rf "$OUT/source"
  "$CDWQC" synth --out "$OUT/source" --t1 "$N_SOURCE" --flair 0 --other 0 --raters 3 --seed 21 \
    | tail -n 1
  step "base store: both warehouses, the source's ratings"
  "$CDWQC" --db "$BASE.tmp" init >/dev/null
  "$CDWQC" --db "$BASE.tmp" import "$OUT/source" | tail -n 1
  "$CDWQC" --db "$BASE.tmp" import "$EXT/warehouse" | tail -n 1
  for f in "$OUT"/source/derivatives/cdwqc-synth/ratings/rater[0-9].tsv; do
    "$CDWQC" --db "$BASE.tmp" ratings import "$f" --rater "$(basename "$f" .tsv)" | tail -n 1
  done
  mv "$BASE.tmp" "$BASE"
fi

# One store per fraction and seed: a stratified sample of external subjects (by the
# truth's usable label) gets its truth rating as rater `local`, the rest none.
pick_labels() { # fraction seed out.tsv
  "$PY" - "$TRUTH" "$1" "$2" "$3" <<'PYEOF'
import csv, random, sys
truth, fraction, seed, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rows = list(csv.DictReader(open(truth), delimiter="\t"))
rng = random.Random(seed)
chosen = []
for usable in ("true", "false"):
    stratum = sorted(r["subject"] for r in rows if r["usable"] == usable)
    rng.shuffle(stratum)
    chosen += stratum[: max(3, round(len(stratum) * fraction / 100))]
chosen = set(chosen)
with open(out, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=rows[0].keys(), delimiter="\t", lineterminator="\n")
    w.writeheader()
    for r in rows:
        if r["subject"] in chosen:
            w.writerow({**r, "rater": "local"})
print(f"{len(chosen)} of {len(rows)} external subjects labelled")
PYEOF
}

# A method is a `cdwqc train --method`, or `shipped`: finetune starting from the shipped
# model (`--init-model`), which then needs no source pretraining.
train_one() { # db run method seed
  local log=$OUT/$2.log status
  status=$("$CDWQC" --db "$1" sql "select coalesce(max(status), 'none') from runs where run_id = '$2'" --format csv | tail -n 1)
  local how=(--run "$2" --preset "$PRESET" --task "$TASK" --seed "$4" --epochs "$EPOCHS")
  case $status in
    completed) return 0 ;;
    none) ;;
    *) how=(--resume "$2") ;; # interrupted: continue from its checkpoint
  esac
  local method=(--method "$3")
  [ "$3" = shipped ] && method=(--method finetune --init-model "$SHIPPED")
  [ "$status" = none ] || method=()
  "$CDWQC" --db "$1" train "${how[@]}" "${method[@]}" --threads 1 --device cpu >"$log" 2>&1 \
    || { echo "training $2 failed: see $log" >&2; return 1; }
  echo "$2: $(tail -n 1 "$log")"
}

for fraction in $FRACTIONS; do
  for seed in $SEEDS; do
    db=$OUT/study_${fraction}_${seed}.duckdb
    if [ ! -f "$db" ]; then
      step "fraction $fraction%, seed $seed: $db"
      pick_labels "$fraction" "$seed" "$OUT/labels_${fraction}_${seed}.tsv"
      cp "$BASE" "$db.tmp"
      "$CDWQC" --db "$db.tmp" ratings import "$OUT/labels_${fraction}_${seed}.tsv" | tail -n 1
      mv "$db.tmp" "$db"
    fi
  done
done

# DuckDB allows one writer per store, so parallel jobs take different stores.
rm -f "$OUT"/*.busy # left by an earlier, killed invocation
step "training: $METHODS x fractions ($FRACTIONS) x seeds ($SEEDS), $JOBS at a time"
start=$(date +%s)
for method in $METHODS; do
  for fraction in $FRACTIONS; do
    for seed in $SEEDS; do
      echo "$method $fraction $seed"
    done
  done
done | {
  running=0
  while read -r method fraction seed; do
    db=$OUT/study_${fraction}_${seed}.duckdb
    # Stores are busy one job at a time: wait for a free slot whose store is idle.
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ] || [ -f "$db.busy" ]; do sleep 2; done
    touch "$db.busy"
    ( train_one "$db" "fl-$TASK-$method-f$fraction-s$seed" "$method" "$seed"; rm -f "$db.busy" ) &
    running=$((running + 1))
  done
  wait
}
echo "training: $(( $(date +%s) - start )) s"

sql_runs() { # db: the study's completed training runs
  "$CDWQC" --db "$1" sql "select run_id from runs where kind = 'train' and status = 'completed' and run_id like 'fl-$TASK-%' order by run_id" --format csv | tail -n +2
}

# Scored in a copy of each store, so that the study stores never hold the truth of the
# images they train without. The shipped model also predicts there as is, and adapted
# (AdaBN), with no label: the reference every labelled method should beat.
step "scoring against the external truth (images each run did not learn from)"
for fraction in $FRACTIONS; do
  for seed in $SEEDS; do
    db=$OUT/study_${fraction}_${seed}.duckdb
    score=$OUT/score_${fraction}_${seed}.duckdb
    rm -f "$score" "$score.wal"
    cp "$db" "$score"
    "$CDWQC" --db "$score" ratings import "$TRUTH" --rater truth | tail -n 1
    # Training predicted its validation and test images only: every run now predicts
    # all the target images, so that the unlabelled ones are scored too.
    for run in $(sql_runs "$score"); do
      "$CDWQC" --db "$score" infer --run "$run" --threads 1 --device cpu | tail -n 1
    done
    if [[ " $METHODS " == *" shipped "* ]]; then
      "$CDWQC" --db "$score" infer --model "$SHIPPED" --as "fl-$TASK-asis-f$fraction-s$seed" \
        --threads 1 --device cpu | tail -n 1
      "$CDWQC" --db "$score" infer --model "$SHIPPED" --as "fl-$TASK-adabn-f$fraction-s$seed" \
        --adapt-batchnorm --threads 1 --device cpu | tail -n 1
    fi
    "$CDWQC" --db "$score" report compare "fl-$TASK-*" --against truth --set unseen --json \
      > "$OUT/compare_${fraction}_${seed}.json"
  done
done

"$PY" scripts/few_label_table.py "$OUT" "$TASK" $FRACTIONS -- $SEEDS | tee "$OUT/results.md"
