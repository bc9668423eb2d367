#!/usr/bin/env bash
# Label efficiency of the active-learning queue (docs/latent-truth.md): balanced accuracy
# against the number of labelled FLAIR images when each new batch of labels comes from
# `cdwqc queue create --strategy uncertainty` (one per subject, 20% random), ranked by
# entropy plus the distance from the target domain (strategy `uncertainty`, the default
# ranking of SSDA runs) or by entropy alone (`entropy`: `--domain-weight 0`), or from a
# purely random queue (`random`: `--random-share 1`), for several seeds.
#
#   ./scripts/label_efficiency.sh
#   AL_SEEDS="1 2 3" AL_ROUNDS=5 AL_START=8 AL_STEP=8 AL_EPOCHS=6 AL_PRESET=demo \
#     AL_DIR=label-efficiency ./scripts/label_efficiency.sh
#
# Two synthetic warehouses (`cdwqc synth`, three simulated raters each): a pool (T1w
# source images, all labelled, and FLAIR images, labelled only as the queues deliver)
# and a test warehouse of other subjects that no queue can reach. For each seed both
# strategies start from the same AL_START labelled FLAIR subjects. Each round trains
# SSDA, scores it on the test warehouse (the model exported and run there with
# `cdwqc infer --model`, scored against the raters' consensus), predicts the pool's
# unrated images, queues AL_STEP of them, and "rates" them by importing the simulated
# raters' ratings of the queued subjects. The curve goes to $AL_DIR/curve.tsv and
# $AL_DIR/curve.md.
set -euo pipefail
cd "$(dirname "$0")/.."
CDWQC=${CDWQC:-target/release/cdwqc}
[ -x "$CDWQC" ] || { echo "$CDWQC is missing: run scripts/setup.sh (or cargo build --release)" >&2; exit 1; }
CDWQC=$(realpath "$CDWQC")
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
OUT=${AL_DIR:-label-efficiency}
SEEDS=${AL_SEEDS:-1 2 3}
ROUNDS=${AL_ROUNDS:-5}
START=${AL_START:-8}
STEP=${AL_STEP:-8}
EPOCHS=${AL_EPOCHS:-6}
PRESET=${AL_PRESET:-demo}
N_T1=${AL_T1:-60}
N_POOL=${AL_POOL:-120}
N_TEST=${AL_TEST:-80}
STRATEGIES=${AL_STRATEGIES:-uncertainty entropy random}
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
sql() { "$CDWQC" --db "$1" sql "$2" --format csv | tail -n +2; }

mkdir -p "$OUT"
RATINGS=$OUT/pool/derivatives/cdwqc-synth/ratings
if [ ! -f "$OUT/pool.duckdb" ]; then
  step "pool warehouse ($N_T1 T1w, $N_POOL FLAIR) and test warehouse ($N_TEST FLAIR, other subjects)"
  rm -rf "$OUT/pool" "$OUT/test" "$OUT"/*.duckdb
  "$CDWQC" synth --out "$OUT/pool" --t1 "$N_T1" --flair "$N_POOL" --other 0 --raters 3 --seed 5 | tail -n 1
  "$CDWQC" synth --out "$OUT/test" --t1 0 --flair "$N_TEST" --other 0 --raters 3 --seed 6 | tail -n 1
  "$CDWQC" --db "$OUT/test.duckdb" init >/dev/null
  "$CDWQC" --db "$OUT/test.duckdb" import "$OUT/test" --no-iqm | tail -n 1
  for f in "$OUT"/test/derivatives/cdwqc-synth/ratings/rater[0-9].tsv; do
    "$CDWQC" --db "$OUT/test.duckdb" ratings import "$f" --rater "$(basename "$f" .tsv)" | tail -n 1
  done
  "$CDWQC" --db "$OUT/pool.duckdb.tmp" init >/dev/null
  "$CDWQC" --db "$OUT/pool.duckdb.tmp" import "$OUT/pool" --no-iqm | tail -n 1
  # The source domain is labelled from the start.
  for f in "$RATINGS"/rater[0-9].tsv; do
    awk -F'\t' 'NR == 1 || $5 == "T1w"' "$f" > "$OUT/t1_$(basename "$f")"
    "$CDWQC" --db "$OUT/pool.duckdb.tmp" ratings import "$OUT/t1_$(basename "$f")" \
      --rater "$(basename "$f" .tsv)" | tail -n 1
  done
  mv "$OUT/pool.duckdb.tmp" "$OUT/pool.duckdb"
fi

# Imports the simulated raters' FLAIR ratings of the given subjects (one per line).
rate_subjects() { # db subjects-file
  for f in "$RATINGS"/rater[0-9].tsv; do
    awk -F'\t' 'NR == FNR { want[$1] = 1; next } FNR == 1 || ($5 == "FLAIR" && ($1 in want))' \
      "$2" "$f" > "$2.$(basename "$f")"
    "$CDWQC" --db "$1" ratings import "$2.$(basename "$f")" --rater "$(basename "$f" .tsv)" >/dev/null
  done
}

curve=$OUT/curve.tsv
[ -f "$curve" ] || printf 'strategy\tseed\tround\tlabelled\tbalanced_accuracy\tci_low\tci_high\n' > "$curve"
for seed in $SEEDS; do
  # The same first labelled subjects for every strategy of a seed.
  first=$OUT/first_s$seed.txt
  sql "$OUT/pool.duckdb" "select distinct subject from images where suffix = 'FLAIR' order by hash(subject || '$seed') limit $START" > "$first"
  for strategy in $STRATEGIES; do
    db=$OUT/al_${strategy}_s$seed.duckdb
    if [ ! -f "$db" ]; then
      cp "$OUT/pool.duckdb" "$db.tmp"
      rate_subjects "$db.tmp" "$first"
      mv "$db.tmp" "$db"
    fi
    share=0.2; weight=1
    [ "$strategy" = random ] && share=1
    [ "$strategy" = entropy ] && weight=0
    for round in $(seq 0 $((ROUNDS - 1))); do
      run=al-$strategy-s$seed-r$round
      if grep -q "^$strategy	$seed	$round	" "$curve"; then continue; fi
      labelled=$(sql "$db" "select count(distinct i.subject) from images i join ratings r using (image_id) where i.suffix = 'FLAIR'")
      step "$strategy, seed $seed, round $round: $labelled labelled FLAIR subjects"
      "$CDWQC" --db "$db" train --preset "$PRESET" --task usable --method ssda --epochs "$EPOCHS" \
        --seed "$seed" --threads 1 --device cpu --run "$run" > "$OUT/$run.log" 2>&1 \
        || { echo "training $run failed: see $OUT/$run.log" >&2; exit 1; }
      "$CDWQC" --db "$db" model export --run "$run" --name "$run" --out "$OUT/models" --force >/dev/null
      "$CDWQC" --db "$OUT/test.duckdb" infer --model "$OUT/models/$run" --threads 1 --device cpu >/dev/null
      "$CDWQC" --db "$OUT/test.duckdb" report model --run "model:$run" --set all --json --bootstrap 500 \
        > "$OUT/report_$run.json"
      "$PY" - "$OUT/report_$run.json" "$strategy" "$seed" "$round" "$labelled" >> "$curve" <<'PYEOF'
import json, sys
r = json.load(open(sys.argv[1]))
ba = r["overall"]["balanced_accuracy"]
lo, hi = ba.get("ci95") or (None, None)
fmt = lambda v: "" if v is None else f"{v:.4f}"
print("\t".join(sys.argv[2:6] + [fmt(ba.get("value")), fmt(lo), fmt(hi)]))
PYEOF
      tail -n 1 "$curve"
      [ "$round" -lt $((ROUNDS - 1)) ] || continue
      "$CDWQC" --db "$db" infer --run "$run" --unrated --threads 1 --device cpu >/dev/null
      "$CDWQC" --db "$db" queue create --strategy uncertainty --run "$run" --size "$STEP" \
        --random-share "$share" --domain-weight "$weight" --sequence FLAIR --raters sim --overlap 0 --seed "$((seed * 100 + round))" \
        --name "q-$round" > "$OUT/queue_$run.txt"
      sql "$db" "select distinct i.subject from queue_items q join queues using (queue_id) join images i using (image_id) where queues.name = 'q-$round'" \
        > "$OUT/queued_$run.txt"
      rate_subjects "$db" "$OUT/queued_$run.txt"
    done
  done
done

"$PY" - "$curve" <<'PYEOF' | tee "$OUT/curve.md"
import csv, sys
from collections import defaultdict
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
by = defaultdict(dict)
labelled = defaultdict(set)
for r in rows:
    by[(r["strategy"], int(r["round"]))][int(r["seed"])] = float(r["balanced_accuracy"] or "nan")
    labelled[int(r["round"])].add(int(r["labelled"]))
strategies = sorted({r["strategy"] for r in rows})
seeds = sorted({int(r["seed"]) for r in rows})
print("| round | labelled FLAIR subjects | " + " | ".join(f"{s} (mean of {len(seeds)} seeds: per seed)" for s in strategies) + " |")
print("|---|---|" + "---|" * len(strategies))
for rnd in sorted(labelled):
    cells = []
    for s in strategies:
        v = by.get((s, rnd), {})
        per = ", ".join(f"{v[k]:.3f}" for k in seeds if k in v)
        mean = sum(v.values()) / len(v) if v else float("nan")
        cells.append(f"{mean:.3f} ({per})")
    span = sorted(labelled[rnd])
    print(f"| {rnd} | {span[0]}-{span[-1]} | " + " | ".join(cells) + " |")
PYEOF
